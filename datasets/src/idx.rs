//! The IDX format of MNIST and Fashion-MNIST (LeCun et al.): a 4-byte magic `00 00 08 n`
//! (unsigned bytes, n dimensions), n big-endian u32 sizes, then the data.

use std::path::Path;

use crate::error::DataError;

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes; `path` is only used in error messages. Validates the magic, the element
/// type, the dimensions and that the length is exactly header + product of dimensions.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!("truncated IDX header: {} bytes", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            format!(
                "not an IDX file (magic {:02x} {:02x}, expected 00 00)",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let n = bytes[3] as usize;
    if n == 0 {
        return Err(DataError::format(path, "IDX file with zero dimensions"));
    }
    let header = 4 + 4 * n;
    if bytes.len() < header {
        return Err(DataError::format(
            path,
            format!("truncated IDX header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..n)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let count = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    let Some(count) = count else {
        return Err(DataError::format(
            path,
            format!("IDX dimensions {dims:?} overflow"),
        ));
    };
    let have = bytes.len() - header;
    if have != count {
        let what = if have < count {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(DataError::format(
            path,
            format!("IDX file {what}: dimensions {dims:?} need {count} data bytes, found {have}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_and_rejects_damage() {
        let p = Path::new("x.idx");
        let a = parse_idx(&idx(&[2, 2, 3], &[7; 12]), p).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data.len(), 12);
        let e = parse_idx(&idx(&[2, 2, 3], &[7; 11]), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.idx") && e.contains("truncated"), "{e}");
        assert!(
            parse_idx(&idx(&[2], &[1, 2, 3]), p)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        let mut bad = idx(&[1], &[1]);
        bad[2] = 0x0d;
        assert!(
            parse_idx(&bad, p)
                .unwrap_err()
                .to_string()
                .contains("element type")
        );
        assert!(parse_idx(&[0, 0, 8], p).is_err());
        assert!(
            parse_idx(&[1, 2, 8, 1, 0, 0, 0, 1, 5], p)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        assert!(
            parse_idx(&[0, 0, 8, 3, 0, 0], p)
                .unwrap_err()
                .to_string()
                .contains("header")
        );
    }
}
