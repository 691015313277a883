//! Reading a file whole, transparently gunzipping it when it starts with the gzip magic.

use std::io::Read;
use std::path::Path;

use crate::error::DataError;

/// The bytes of `path`, decompressed if gzipped (magic 1f 8b).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.into(),
        error: e,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::format(path, format!("corrupt or truncated gzip stream: {e}"))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
