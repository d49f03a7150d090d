//! Kafka's zigzag varints (protobuf style): at most 5 bytes for an `i32`, 10 for an `i64`.
//! Reading is checked: an over-long or truncated varint is an error, never a panic.

/// Appends `value` as a zigzag varint.
pub(crate) fn put(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}

/// Bytes `value` takes as a zigzag varint.
pub(crate) fn len(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The bytes ended inside it.
    Truncated,
    /// Longer than its type allows, or out of its range.
    Overlong,
}

/// Reads a zigzag varlong at `*at`, advancing it.
pub(crate) fn get_i64(bytes: &[u8], at: &mut usize) -> Result<i64, VarintError> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at).ok_or(VarintError::Truncated)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return Err(VarintError::Overlong);
        }
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(VarintError::Overlong)
}

/// Reads a zigzag varint that must fit an `i32` (at most 5 bytes).
pub(crate) fn get_i32(bytes: &[u8], at: &mut usize) -> Result<i32, VarintError> {
    let start = *at;
    let value = get_i64(bytes, at)?;
    if *at - start > 5 {
        return Err(VarintError::Overlong);
    }
    i32::try_from(value).map_err(|_| VarintError::Overlong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(value in any::<i64>()) {
            let mut out = Vec::new();
            put(&mut out, value);
            prop_assert_eq!(out.len(), len(value));
            let mut at = 0;
            prop_assert_eq!(get_i64(&out, &mut at), Ok(value));
            prop_assert_eq!(at, out.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut at = 0;
            let _ = get_i64(&bytes, &mut at);
            let mut at = 0;
            let _ = get_i32(&bytes, &mut at);
        }
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        assert_eq!(get_i64(&[0x80], &mut 0), Err(VarintError::Truncated));
        assert_eq!(get_i64(&[0xff; 11], &mut 0), Err(VarintError::Overlong));
        let mut big = Vec::new();
        put(&mut big, i64::from(i32::MAX) + 1);
        assert_eq!(get_i32(&big, &mut 0), Err(VarintError::Overlong));
        let mut at = 0;
        assert_eq!(get_i32(&[0x01], &mut at), Ok(-1));
    }
}
