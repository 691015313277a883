//! NumPy's `.npz` archives: a zip file whose members are `.npy` files named `<key>.npy`
//! (`numpy.savez` stores them, `numpy.savez_compressed` deflates them; both are read). Written
//! deflated, as pytorch-fid's `save_fid_stats` does, through a temporary sibling and a rename.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow};

/// Writes the `.npy` byte strings `members` (key, bytes) into the archive `path`.
pub fn write(path: &Path, members: &[(&str, Vec<u8>)]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(members.iter().any(|(_, b)| b.len() >= u32::MAX as usize));
    for (key, bytes) in members {
        zip.start_file(format!("{key}.npy"), options)
            .and_then(|_| zip.write_all(bytes).map_err(Into::into))
            .with_context(|| format!("{}: cannot write member {key}", path.display()))?;
    }
    let bytes = zip
        .finish()
        .with_context(|| format!("{}: cannot finish the archive", path.display()))?
        .into_inner();
    crate::output::write_file(path, &bytes)
}

/// The members of the archive `path` as key (the name without `.npy`) → `.npy` bytes; a file
/// that is not a zip archive, or a damaged member, is an error naming the file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let bad =
        |e: zip::result::ZipError| anyhow!("{}: not a readable .npz archive ({e})", path.display());
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(bad)?;
        let name = member.name().map_err(bad)?.to_string();
        let mut data = Vec::with_capacity(member.size().min(1 << 30) as usize);
        member
            .read_to_end(&mut data)
            .map_err(|e| anyhow!("{}: member {name} is damaged ({e})", path.display()))?;
        out.insert(name.strip_suffix(".npy").unwrap_or(&name).to_string(), data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{npy_bytes_f64, parse_npy_f64};

    #[test]
    fn members_round_trip_and_damage_is_named() {
        let dir = std::env::temp_dir().join(format!("tweedie-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.npz");
        let mu = [1.5, -2.0, 1e-300];
        write(
            &p,
            &[
                ("mu", npy_bytes_f64(&mu, &[3])),
                ("sigma", npy_bytes_f64(&[4.0; 9], &[3, 3])),
            ],
        )
        .unwrap();
        let m = read(&p).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["mu", "sigma"]);
        assert_eq!(parse_npy_f64(&m["mu"]).unwrap(), (mu.to_vec(), vec![3]));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&p, &bytes).unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(e.contains("s.npz") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
