//! Object keys in the bucket: the one owner of the naming scheme (see the crate docs for
//! the picture).
//!
//! Keys handed around inside the crate and recorded in manifests are relative to the
//! configured prefix (`streams/s1/00000000000000000000.log`), so a bucket's contents
//! can be moved under another prefix and still be read. [`Layout::path`] turns them into
//! full store paths.

use object_store::path::Path;

use crate::Error;

const STREAMS: &str = "streams";
const DOCUMENTS: &str = "documents";
const UPLOADS: &str = "uploads";
const PROBES: &str = "probes";
const MANIFEST_FILE: &str = "manifest.json";

/// The objects of a remote segment are named as the log names its files
/// (`shardline_log::SegmentFile`): one scheme wherever a segment lives.
pub(crate) use shardline_log::SegmentFile as SegmentObject;

/// Hex digits of a writer id.
pub(crate) const WRITER_ID_DIGITS: usize = 16;

/// A writer token: a writer id, then `-` and the upload attempt (hex), e.g.
/// `00000000deadbeef-1f`.
fn is_writer_token(text: &str) -> bool {
    let (id, attempt) = text.split_once('-').unwrap_or((text, "0"));
    id.len() == WRITER_ID_DIGITS
        && id.bytes().all(|byte| byte.is_ascii_hexdigit())
        && (1..=16).contains(&attempt.len())
        && attempt.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Maps names to keys under the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: Path,
}

impl Layout {
    pub(crate) fn new(prefix: Path) -> Layout {
        Layout { prefix }
    }

    /// The full store path of a relative key.
    pub(crate) fn path(&self, key: &str) -> Path {
        // Keys are built by this module from validated names, so parsing cannot fail;
        // `from_iter` re-joins the parts without re-encoding them.
        Path::from_iter(self.prefix.parts().chain(Path::from(key).parts()))
    }

    /// The relative key of a full store path, if it lies under the prefix.
    pub(crate) fn key_of(&self, path: &Path) -> Option<String> {
        let rest = path.prefix_match(&self.prefix)?;
        Some(Path::from_iter(rest).to_string())
    }

    pub(crate) fn shard_dir(shard_key: &str) -> String {
        format!("{STREAMS}/{shard_key}")
    }

    /// The key of a segment object of one upload attempt by `writer` (a tier's id,
    /// random per process, then `-` and the attempt number):
    /// `streams/<shard>/<base>-<writer>.<ext>`. No two attempts, of this server or of
    /// another one pointed at the same bucket, write the same key, so objects are put
    /// create-if-absent and nobody overwrites what a manifest lists; the manifest's
    /// compare-and-swap decides whose segment counts.
    pub(crate) fn segment_key(
        shard_key: &str,
        base_offset: u64,
        object: SegmentObject,
        writer: &str,
    ) -> String {
        let (stem, extension) = object
            .name(base_offset)
            .split_once('.')
            .map(|(stem, extension)| (stem.to_owned(), extension.to_owned()))
            .unwrap_or_default();
        format!("{STREAMS}/{shard_key}/{stem}-{writer}.{extension}")
    }

    /// The base offset and writer of a segment object's key, if it is one (of any of
    /// the three kinds). Keys written before writer ids existed have none.
    pub(crate) fn segment_object(key: &str) -> Option<(u64, Option<&str>)> {
        let name = key.rsplit('/').next()?;
        let (stem, extension) = name.split_once('.')?;
        let (digits, writer) = match stem.split_once('-') {
            Some((digits, writer)) if is_writer_token(writer) => (digits, Some(writer)),
            Some(_) => return None,
            None => (stem, None),
        };
        SegmentObject::parse(&format!("{digits}.{extension}"))
            .map(|(base_offset, _)| (base_offset, writer))
    }

    /// The base offset of a segment object's key, if it is one.
    pub(crate) fn segment_base_offset(key: &str) -> Option<u64> {
        Layout::segment_object(key).map(|(base_offset, _)| base_offset)
    }

    pub(crate) fn manifest_key(shard_key: &str) -> String {
        format!("{STREAMS}/{shard_key}/{MANIFEST_FILE}")
    }

    pub(crate) fn is_manifest_key(key: &str) -> bool {
        key.rsplit('/').next() == Some(MANIFEST_FILE)
    }

    pub(crate) fn document_key(name: &str) -> String {
        format!("{DOCUMENTS}/{name}")
    }

    pub(crate) fn documents_dir() -> &'static str {
        DOCUMENTS
    }

    /// Where the journal entry of an in-flight multipart upload lives.
    pub(crate) fn upload_marker_key(nonce: &str) -> String {
        format!("{UPLOADS}/{nonce}.json")
    }

    pub(crate) fn uploads_dir() -> &'static str {
        UPLOADS
    }

    pub(crate) fn probes_dir() -> &'static str {
        PROBES
    }

    pub(crate) fn probe_key(nonce: &str) -> String {
        format!("{PROBES}/{nonce}")
    }
}

/// Checks that `name` (a shard key, document name or prefix) is usable as one or more
/// key segments: non-empty, `/`-separated, no empty, `.` or `..` segment, and nothing
/// an object store would have to escape.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid("it has an empty, '.' or '..' segment"));
        }
        // Letters, digits and a few punctuation marks are stored verbatim by every
        // backend; anything else would be percent-encoded differently by each.
        let plain = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+'));
        if !plain {
            return Err(invalid(
                "segments may hold only ASCII letters, digits and - _ . = +",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        assert_eq!(
            Layout::segment_key(
                "orders/shard-0001",
                4711,
                SegmentObject::Log,
                "00000000deadbeef-2a"
            ),
            "streams/orders/shard-0001/00000000000000004711-00000000deadbeef-2a.log"
        );
        assert_eq!(
            Layout::segment_object("streams/s/00000000000000004711-00000000deadbeef-2a.index"),
            Some((4711, Some("00000000deadbeef-2a")))
        );
        assert_eq!(
            Layout::segment_object("streams/s/00000000000000004711-nothex.index"),
            None
        );
        assert_eq!(
            Layout::manifest_key("s"),
            "streams/s/manifest.json".to_string()
        );
        assert_eq!(
            Layout::segment_base_offset("streams/s/00000000000000004711.timeindex"),
            Some(4711)
        );
        assert_eq!(Layout::segment_base_offset("streams/s/manifest.json"), None);
        let layout = Layout::new(Path::from("a/b"));
        let path = layout.path("streams/s/manifest.json");
        assert_eq!(path.as_ref(), "a/b/streams/s/manifest.json");
        assert_eq!(
            layout.key_of(&path).as_deref(),
            Some("streams/s/manifest.json")
        );
        let bare = Layout::new(Path::default());
        assert_eq!(bare.path("documents/x").as_ref(), "documents/x");
    }

    #[test]
    fn names_are_validated() {
        validate_name("orders/shard-0001").unwrap();
        for bad in ["", "/a", "a//b", "a/../b", "a b", "ä", "a/"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
