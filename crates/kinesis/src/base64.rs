//! Base64 for the JSON protocol's blobs (`Data`): RFC 4648's standard alphabet, padded.
//!
//! Written here rather than taken from a crate because decoding is a few dozen lines and
//! the part that matters is refusing bad input the way AWS does: padding is required (the
//! length must be a multiple of 4), `=` only at the end, and the unused low bits of the
//! last character must be zero. The errors carry AWS's wording so that the
//! `SerializationException` message matches what the real service says.

/// Why a blob did not decode. Messages are AWS's, spelling included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Base64Error {
    /// The length, in UTF-16 code units as the Java service counts, is not a multiple of 4.
    #[error("Base64 encoded length is expected a multiple of 4 bytes but found: {0}")]
    Length(usize),
    /// A character outside the alphabet, or `=` before the end.
    #[error("Invalid Base64 character: '{0}'")]
    Character(char),
    /// Too much padding, or the last character carries bits that no byte uses.
    #[error("Invalid last non-pad Base64 character dectected")]
    LastCharacter,
}

/// Marks bytes outside the alphabet in [`SEXTETS`].
const NOT_BASE64: u8 = 0xff;

/// The 6-bit value of each alphabet byte.
const SEXTETS: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [NOT_BASE64; 256];
    let mut index = 0;
    while index < alphabet.len() {
        table[alphabet[index] as usize] = index as u8;
        index += 1;
    }
    table
};

/// Decodes padded standard base64.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    let units = if text.is_ascii() {
        bytes.len()
    } else {
        text.encode_utf16().count()
    };
    if !units.is_multiple_of(4) {
        return Err(Base64Error::Length(units));
    }
    let padding = bytes.iter().rev().take_while(|byte| **byte == b'=').count();
    if padding > 2 {
        return Err(Base64Error::LastCharacter);
    }
    let body = &bytes[..bytes.len() - padding];
    let mut sextets = Vec::with_capacity(4);
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for (at, byte) in body.iter().enumerate() {
        let sextet = SEXTETS[usize::from(*byte)];
        if sextet == NOT_BASE64 {
            // Every byte before `at` was ASCII, so `at` starts a character.
            let character = text[at..].chars().next().unwrap_or('\u{fffd}');
            return Err(Base64Error::Character(character));
        }
        sextets.push(u32::from(sextet));
        if sextets.len() == 4 {
            let group = sextets[0] << 18 | sextets[1] << 12 | sextets[2] << 6 | sextets[3];
            out.extend_from_slice(&group.to_be_bytes()[1..]);
            sextets.clear();
        }
    }
    // What padding leaves: 2 characters for 1 byte, 3 for 2; their spare bits must be 0.
    match sextets[..] {
        [] => {}
        [first, second] => {
            if second & 0x0f != 0 {
                return Err(Base64Error::LastCharacter);
            }
            out.push((first << 2 | second >> 4) as u8);
        }
        [first, second, third] => {
            if third & 0x03 != 0 {
                return Err(Base64Error::LastCharacter);
            }
            let group = first << 18 | second << 12 | third << 6;
            out.extend_from_slice(&group.to_be_bytes()[1..3]);
        }
        _ => return Err(Base64Error::LastCharacter),
    }
    Ok(out)
}

/// Encodes `bytes` as padded standard base64 (tests build request bodies with it).
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(group >> (18 - 6 * index) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors_decode_and_encode() {
        let vectors: [(&str, &str); 7] = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes(), "{encoded}");
            assert_eq!(encode(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn every_byte_value_round_trips_at_every_padding() {
        let all: Vec<u8> = (0..=255).collect();
        for len in [254, 255, 256] {
            assert_eq!(decode(&encode(&all[..len])).unwrap(), &all[..len]);
        }
        assert_eq!(decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn bad_input_is_refused_with_aws_messages() {
        let cases: [(&str, Base64Error, &str); 8] = [
            (
                "23456",
                Base64Error::Length(5),
                "Base64 encoded length is expected a multiple of 4 bytes but found: 5",
            ),
            (
                "=+/=",
                Base64Error::Character('='),
                "Invalid Base64 character: '='",
            ),
            (
                "+/+=",
                Base64Error::LastCharacter,
                "Invalid last non-pad Base64 character dectected",
            ),
            ("Zh==", Base64Error::LastCharacter, ""),
            ("A===", Base64Error::LastCharacter, ""),
            ("Zm9v-A==", Base64Error::Character('-'), ""),
            ("Zm 9", Base64Error::Character(' '), ""),
            ("Zmé=", Base64Error::Character('é'), ""),
        ];
        for (input, error, message) in cases {
            let got = decode(input).unwrap_err();
            assert_eq!(got, error, "{input}");
            if !message.is_empty() {
                assert_eq!(got.to_string(), message);
            }
        }
        // Java counts UTF-16 units: "é" is one, so "Zmé" has length 3.
        assert_eq!(decode("Zmé").unwrap_err(), Base64Error::Length(3));
    }
}
