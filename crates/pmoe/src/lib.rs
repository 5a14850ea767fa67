//! pMoE (Mo, Luo, Li, ICLR 2025): expert-specific prompt tokens for several frozen domain
//! backbones, combined by a learned dynamic token dispatcher at the prompted layers.
//!
//! This crate will own the dispatcher, the per-expert prompt tokens and the fused heads; it builds
//! on [`mope_core`] (prompt insertion, adapter contract) and [`backbones`] (the frozen experts).
//! It is filled by the pMoE issue; nothing here is usable yet.
