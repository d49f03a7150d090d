//! Kafka framing: a big-endian `i32` length, then that many bytes of request.
//!
//! The length is checked against the configured limit *before* any buffer is sized from
//! it, so a client claiming a 2 GiB request costs nothing. "The socket has not delivered
//! the whole frame yet" is not an error; the caller just reads more.

use bytes::{Buf, BytesMut};

/// Smallest request: api key (2), api version (2), correlation id (4), client id length (2).
pub(crate) const REQUEST_LEN_MIN: usize = 10;

/// Why a frame was refused. Each closes the connection, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length prefix exceeds the configured limit.
    #[error("frame of {claimed} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Claimed length.
        claimed: i64,
        /// Configured limit.
        limit: usize,
    },
    /// The length prefix is negative or too small for a request header.
    #[error("frame length {0} is too small for a request header")]
    TooSmall(i64),
}

/// Takes one whole frame off the front of `buffer`, if it holds one.
///
/// Returns `Ok(None)` when more bytes are needed; it then reserves room for the rest of
/// the frame, which is safe because the length has already passed the limit check.
pub(crate) fn decode_frame(
    buffer: &mut BytesMut,
    limit: usize,
) -> Result<Option<BytesMut>, FrameError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let claimed = i64::from(i32::from_be_bytes([
        buffer[0], buffer[1], buffer[2], buffer[3],
    ]));
    if claimed < REQUEST_LEN_MIN as i64 {
        return Err(FrameError::TooSmall(claimed));
    }
    if claimed > limit as i64 {
        return Err(FrameError::TooLarge { claimed, limit });
    }
    let length = claimed as usize;
    if buffer.len() < 4 + length {
        buffer.reserve(4 + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(4);
    Ok(Some(buffer.split_to(length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn whole_frames_are_split_off_and_partial_ones_wait() {
        let mut buffer = framed(&[7u8; 12]);
        buffer.extend_from_slice(&framed(&[8u8; 20])[..9]);
        let first = decode_frame(&mut buffer, 1024).unwrap().unwrap();
        assert_eq!(&first[..], &[7u8; 12]);
        assert_eq!(decode_frame(&mut buffer, 1024).unwrap(), None);
        assert_eq!(buffer.len(), 9);
    }

    #[test]
    fn an_oversized_claim_is_refused_without_reserving_it() {
        let mut buffer = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        let capacity_before = buffer.capacity();
        assert_eq!(
            decode_frame(&mut buffer, 1 << 20),
            Err(FrameError::TooLarge {
                claimed: i64::from(i32::MAX),
                limit: 1 << 20
            })
        );
        assert_eq!(buffer.capacity(), capacity_before);
    }

    #[test]
    fn negative_and_tiny_lengths_are_refused() {
        let mut negative = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            decode_frame(&mut negative, 1024),
            Err(FrameError::TooSmall(-5))
        );
        let mut tiny = framed(&[0u8; 3]);
        assert_eq!(decode_frame(&mut tiny, 1024), Err(FrameError::TooSmall(3)));
    }
}
