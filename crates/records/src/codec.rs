//! The four compression codecs of Kafka's v2 batches, with decompression bounded by a
//! caller-given limit: a few hundred bytes that claim (or inflate to) gigabytes fail as
//! soon as the output passes the limit, having allocated at most about the limit.
//!
//! Formats, as Kafka's clients write them:
//! - gzip: one or more gzip members;
//! - snappy: the Xerial framing of the Java client (`\x82SNAPPY\0`, version, compat, then
//!   length-prefixed raw blocks) or one raw block (librdkafka may send either); we write
//!   Xerial, which every client reads;
//! - lz4: the LZ4 frame format, independent 64 KiB blocks, no checksums (what Kafka's
//!   `KafkaLZ4BlockOutputStream` writes);
//! - zstd: zstd frames; the decoder's window is capped so a frame cannot make it
//!   allocate a large window either.

use std::io::{Read, Write};

use shardline_core::batch::Compression;

use crate::RecordsError;

/// Xerial snappy's stream header: magic, then version 1 and compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per Xerial block, the Java client's default.
const XERIAL_BLOCK: usize = 32 * 1024;
/// Output is read in chunks of this size, so the buffer grows with what really comes out.
const READ_CHUNK: usize = 64 * 1024;
/// zstd window cap: 8 MiB covers every level up to 19 (the decoder allows 128 MiB by
/// default); larger limits allow up to the limit's size, at most 2^27.
const ZSTD_WINDOW_LOG_MIN: u32 = 23;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// zstd level for batches the server re-encodes: the library's default.
const ZSTD_LEVEL: i32 = 3;

/// Decompresses the records section of a batch compressed with `codec`, failing with
/// [`RecordsError::TooLarge`] as soon as the output would exceed `limit` bytes.
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let failed = |reason: String| RecordsError::Decompress {
        codec: codec_name(codec),
        reason,
    };
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(RecordsError::TooLarge { limit });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit, codec),
        Compression::Snappy => snappy_decompress(input, limit).map_err(|error| match error {
            SnappyError::TooLarge => RecordsError::TooLarge { limit },
            SnappyError::Bad(reason) => failed(reason),
        }),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(input).map_err(|error| failed(error.to_string()))?;
            read_bounded(decoder, limit, codec)
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|error| failed(error.to_string()))?;
            decoder
                .window_log_max(zstd_window_log(limit))
                .map_err(|error| failed(error.to_string()))?;
            read_bounded(decoder, limit, codec)
        }
        Compression::Unknown(id) => Err(RecordsError::UnknownCodec(id)),
    }
}

/// Compresses a records section with `codec` (what a producer would send).
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let failed = |reason: String| RecordsError::Compress {
        codec: codec_name(codec),
        reason,
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(input)
                .map_err(|error| failed(error.to_string()))?;
            encoder.finish().map_err(|error| failed(error.to_string()))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + input.len() / 2 + 64);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|error| failed(error.to_string()))?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                .build(Vec::new())
                .map_err(|error| failed(error.to_string()))?;
            encoder
                .write_all(input)
                .map_err(|error| failed(error.to_string()))?;
            let (out, result) = encoder.finish();
            result.map_err(|error| failed(error.to_string()))?;
            Ok(out)
        }
        Compression::Zstd => {
            zstd::bulk::compress(input, ZSTD_LEVEL).map_err(|error| failed(error.to_string()))
        }
        Compression::Unknown(id) => Err(RecordsError::UnknownCodec(id)),
    }
}

/// The codec's name in Kafka's `compression.type` spelling.
pub fn codec_name(codec: Compression) -> &'static str {
    match codec {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
        Compression::Unknown(_) => "unknown",
    }
}

fn zstd_window_log(limit: usize) -> u32 {
    let bits = usize::BITS - limit.max(1).leading_zeros();
    bits.clamp(ZSTD_WINDOW_LOG_MIN, ZSTD_WINDOW_LOG_MAX)
}

/// Reads `reader` to its end into a buffer that never grows past `limit + 1` bytes.
fn read_bounded(
    mut reader: impl Read,
    limit: usize,
    codec: Compression,
) -> Result<Vec<u8>, RecordsError> {
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() > limit {
            return Err(RecordsError::TooLarge { limit });
        }
        if out.len() == out.capacity() {
            // Grow geometrically, but never past one byte over the limit: that byte is how
            // an over-limit output is noticed.
            let target = (out.capacity() * 2)
                .max(READ_CHUNK)
                .min(limit.saturating_add(1));
            out.reserve_exact(target.saturating_sub(out.len()).max(1));
        }
        let start = out.len();
        let room = (out.capacity() - start).min(limit.saturating_add(1) - start);
        out.resize(start + room, 0);
        match reader.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                return Ok(out);
            }
            Ok(read) => out.truncate(start + read),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(error) => {
                return Err(RecordsError::Decompress {
                    codec: codec_name(codec),
                    reason: error.to_string(),
                });
            }
        }
    }
}

enum SnappyError {
    TooLarge,
    Bad(String),
}

fn snappy_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, SnappyError> {
    let bad = |error: snap::Error| SnappyError::Bad(error.to_string());
    let mut decoder = snap::raw::Decoder::new();
    if input.len() >= XERIAL_HEADER_LEN && input[..8] == XERIAL_MAGIC {
        let mut out = Vec::new();
        let mut at = XERIAL_HEADER_LEN;
        while at < input.len() {
            let Some(length) = input.get(at..at + 4) else {
                return Err(SnappyError::Bad("truncated xerial block length".to_owned()));
            };
            let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
            at += 4;
            let Some(block) = input.get(at..at.saturating_add(length)) else {
                return Err(SnappyError::Bad(format!(
                    "xerial block of {length} bytes runs past the data"
                )));
            };
            at += length;
            // The block's header states its decompressed size: checked before sizing
            // anything from it.
            let size = snap::raw::decompress_len(block).map_err(bad)?;
            if out.len().saturating_add(size) > limit {
                return Err(SnappyError::TooLarge);
            }
            let start = out.len();
            out.resize(start + size, 0);
            let written = decoder.decompress(block, &mut out[start..]).map_err(bad)?;
            out.truncate(start + written);
        }
        return Ok(out);
    }
    let size = snap::raw::decompress_len(input).map_err(bad)?;
    if size > limit {
        return Err(SnappyError::TooLarge);
    }
    let mut out = vec![0; size];
    let written = decoder.decompress(input, &mut out).map_err(bad)?;
    out.truncate(written);
    Ok(out)
}

/// Every codec Kafka defines, for tests that cover them all.
#[cfg(test)]
pub(crate) const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000)) {
            for codec in CODECS {
                let packed = compress(codec, &data).unwrap();
                prop_assert_eq!(&decompress(codec, &packed, data.len()).unwrap(), &data);
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for codec in CODECS {
                let _ = decompress(codec, &data, 1 << 20);
            }
        }
    }

    /// Compressed zeros that inflate to 16 times the limit used below.
    const BOMB_BYTES: usize = 16 << 20;

    fn bomb(codec: Compression) -> Vec<u8> {
        let zeros = vec![0u8; BOMB_BYTES];
        compress(codec, &zeros).unwrap()
    }

    #[test]
    fn bombs_fail_at_the_limit_for_every_codec() {
        for codec in &CODECS[1..] {
            let packed = bomb(*codec);
            let error = decompress(*codec, &packed, 1 << 20).unwrap_err();
            assert!(
                matches!(error, RecordsError::TooLarge { limit } if limit == 1 << 20),
                "{codec:?}: {error}"
            );
            // One byte under the real size also fails; the exact size passes.
            assert!(decompress(*codec, &packed, BOMB_BYTES - 1).is_err());
            assert_eq!(
                decompress(*codec, &packed, BOMB_BYTES).unwrap().len(),
                BOMB_BYTES
            );
        }
    }

    #[test]
    fn raw_snappy_that_claims_more_than_the_limit_allocates_nothing() {
        // A raw snappy block whose header varint claims 2^32-1 bytes.
        let lying = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(
            decompress(Compression::Snappy, &lying, 1 << 20),
            Err(RecordsError::TooLarge { .. })
        ));
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello")
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 64).unwrap(),
            b"hello hello"
        );
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        // A streamed frame (no content size) declaring a 128 MiB window: the stock
        // decoder would allocate that window for a few bytes of data.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder
            .set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(b"tiny").unwrap();
        let frame = encoder.finish().unwrap();
        let error = decompress(Compression::Zstd, &frame, 1 << 20).unwrap_err();
        assert!(
            matches!(error, RecordsError::Decompress { codec: "zstd", .. }),
            "{error}"
        );
        // Allowed where the limit itself is that large.
        assert_eq!(
            decompress(Compression::Zstd, &frame, 1 << 27).unwrap(),
            b"tiny"
        );
    }

    #[test]
    fn unknown_codecs_are_named() {
        assert!(matches!(
            decompress(Compression::Unknown(6), b"x", 10),
            Err(RecordsError::UnknownCodec(6))
        ));
    }
}
