//! The backends and devices `--device` selects: `cpu` (burn's `flex`), `wgpu` (any GPU through
//! Vulkan/Metal/DX12, or the CPU through lavapipe) and `cuda`. Backends not compiled in (cargo
//! features `wgpu`, `cuda` of this crate) are named in the error with the flag that adds them.

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ops::Kernels;

/// An autodiff backend the trainer runs on: with the workspace's custom operations
/// ([`ops::Kernels`]) on it and on its inner backend (validation runs there).
pub trait TrainBackend: AutodiffBackend<InnerBackend: Kernels> + Kernels {}

impl<B> TrainBackend for B where B: AutodiffBackend<InnerBackend: Kernels> + Kernels {}

/// A device name from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's `flex` CPU backend.
    Cpu,
    /// burn's `wgpu` backend, default adapter.
    Wgpu,
    /// burn's `cuda` backend, device 0.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("unknown device `{other}`; expected cpu, wgpu or cuda")),
        }
    }
}

/// Work that runs on any autodiff backend.
pub trait BackendJob {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` (its default device).
    fn run<B: TrainBackend>(self) -> Result<Self::Output>;
}

/// Runs `job` on the chosen backend.
pub fn run_on<J: BackendJob>(choice: DeviceChoice, job: J) -> Result<J::Output> {
    match choice {
        DeviceChoice::Cpu => job.run::<burn::backend::Autodiff<burn::backend::Flex>>(),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(),
        #[allow(unreachable_patterns)]
        other => {
            let feature = if other == DeviceChoice::Wgpu { "wgpu" } else { "cuda" };
            bail!("this binary was built without the `{feature}` backend; rebuild with `--features {feature}`")
        }
    }
}
