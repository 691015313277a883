//! The CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G,
//! 1024 B, row-major 32×32).

use std::path::Path;

use crate::error::DataError;

pub const RECORD: usize = 1 + 3 * 32 * 32;

/// Splits one batch file's bytes into (pixels CHW, labels). Rejects a length that is not a whole
/// number of records and labels outside 0..10.
pub fn parse_cifar(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(DataError::format(
                path,
                format!("record {i} has label {}, expected 0..9", rec[0]),
            ));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_rejects_truncation() {
        let mut b = vec![3u8];
        b.extend(std::iter::repeat_n(9u8, RECORD - 1));
        b.push(1);
        b.extend(std::iter::repeat_n(4u8, RECORD - 1));
        let (px, lb) = parse_cifar(&b, Path::new("b.bin")).unwrap();
        assert_eq!(lb, vec![3, 1]);
        assert_eq!(px.len(), 2 * 3072);
        assert_eq!(px[3072], 4);
        let e = parse_cifar(&b[..b.len() - 1], Path::new("b.bin"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.bin") && e.contains("truncated"), "{e}");
        b[0] = 10;
        assert!(
            parse_cifar(&b, Path::new("b.bin"))
                .unwrap_err()
                .to_string()
                .contains("label 10")
        );
    }
}
