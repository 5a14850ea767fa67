//! What an experiment spec asks of the model: its configuration (MoPE's family or pMoE's), built
//! from the spec's prompt, router and training settings, and where its weights and caches are.

use std::path::PathBuf;

use backbones::default_weights_dir;
use mope_core::{MopePromptsConfig, MultimodalClassifierConfig, RouterSettings};
use pmoe::PmoeConfig;

use crate::spec::ExperimentSpec;

impl ExperimentSpec {
    /// The classifier configuration a MoPE-family experiment asks for, with `num_outputs` head
    /// outputs.
    ///
    /// # Panics
    /// If the experiment is of the pMoE family.
    pub fn classifier_config(&self, num_outputs: usize) -> MultimodalClassifierConfig {
        let p = &self.prompts;
        let router = RouterSettings::new()
            .with_d_inter(p.d_inter)
            .with_d_cross(p.d_cross)
            .with_temperature(p.temperature)
            .with_noise_std(p.noise_std)
            .with_top_k((p.top_k > 0).then_some(p.top_k))
            .with_key_seed(self.train.seed);
        let prompts = MopePromptsConfig::new(0, 0, 0)
            .with_static_len(p.static_len)
            .with_num_experts(p.num_experts)
            .with_expert_len(p.expert_len)
            .with_mapped_len(p.mapped_len)
            .with_prompted_layers((!p.prompted_layers.is_empty()).then(|| p.prompted_layers.clone()))
            .with_mapper_hidden(p.mapper_hidden)
            .with_router(router);
        let method = self.model.method.fusion().expect("a two-encoder method");
        MultimodalClassifierConfig::new(method, num_outputs, prompts)
            .with_complementary_prompt_len(self.model.complementary_prompt_len)
            .with_head(self.model.head)
            .with_importance_threshold(self.train.importance_threshold)
    }

    /// The pMoE configuration a pMoE-family experiment asks for, with `num_outputs` head outputs.
    ///
    /// # Panics
    /// If the experiment is of the MoPE family.
    pub fn pmoe_config(&self, num_outputs: usize) -> PmoeConfig {
        let p = &self.pmoe;
        PmoeConfig::new(num_outputs)
            .with_combine(self.model.method.combine().expect("a method over experts"))
            .with_prompt_len(p.prompt_len)
            .with_depth(p.depth)
            .with_carry(p.carry)
            .with_temperature(p.temperature)
    }

    /// Where the encoders' weights are: `model.weights_dir`, or the default assets folder.
    pub fn weights_dir(&self) -> PathBuf {
        if self.model.weights_dir.as_os_str().is_empty() { default_weights_dir() } else { self.model.weights_dir.clone() }
    }

    /// The same experiment with every location absolute, as a run directory records it so that
    /// `eval`, `predict` and `plot` work from any folder: the dataset root, the cache, the
    /// weights directory (the default one written out) and the folders of `<preset>=<dir>`
    /// encoders, each against the current folder.
    ///
    /// # Errors
    /// If the current folder cannot be read.
    pub fn with_absolute_paths(self) -> std::io::Result<Self> {
        self.with_absolute_paths_from(&std::env::current_dir()?)
    }

    /// [`with_absolute_paths`](Self::with_absolute_paths) against the folder `base` instead of the
    /// current one.
    pub fn with_absolute_paths_from(mut self, base: &std::path::Path) -> std::io::Result<Self> {
        let absolute = |path: &std::path::Path| std::path::absolute(base.join(path));
        self.data.root = absolute(&self.data.root)?;
        if !self.data.cache_dir.as_os_str().is_empty() {
            self.data.cache_dir = absolute(&self.data.cache_dir)?;
        }
        self.model.weights_dir = absolute(&self.weights_dir())?;
        let encoder = |name: &mut String| -> std::io::Result<()> {
            if let Some((preset, dir)) = name.split_once('=') {
                *name = format!("{preset}={}", absolute(std::path::Path::new(dir))?.display());
            }
            Ok(())
        };
        encoder(&mut self.model.main)?;
        encoder(&mut self.model.complementary)?;
        self.model.experts.iter_mut().try_for_each(encoder)?;
        Ok(self)
    }

    /// Where prepared images and complementary features are cached (`data.cache_dir`), if anywhere.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        (!self.data.cache_dir.as_os_str().is_empty()).then(|| self.data.cache_dir.clone())
    }
}
