//! `cargo xtask results`: the results of a reproduction, `runs/reproduce.md` as `mope reproduce`
//! wrote it, copied into the documents that quote it, so that no table or claim there is edited
//! by hand. Each document marks where its copy goes:
//!
//! ```text
//! <!-- results: table and claims -->   (README.md: the main table and the claims)
//! ...
//! <!-- end of results -->
//! <!-- results: all -->                (docs/reproduce.md: the whole file)
//! ...
//! <!-- end of results -->
//! ```
//!
//! What sits between a start marker and the end marker is replaced; the rest of the document is
//! left as it is.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The end of a copied block.
const END: &str = "<!-- end of results -->";

/// What a document quotes of `runs/reproduce.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extract {
    /// The first table (one row per experiment) and the claims.
    TableAndClaims,
    /// The whole file.
    All,
}

impl Extract {
    fn marker(self) -> &'static str {
        match self {
            Self::TableAndClaims => "<!-- results: table and claims -->",
            Self::All => "<!-- results: all -->",
        }
    }

    /// The part of `reproduce` (the text of `runs/reproduce.md`) this extract quotes.
    fn of(self, reproduce: &str) -> Result<String> {
        if self == Self::All {
            return Ok(reproduce.trim_end().to_string());
        }
        let blocks: Vec<&str> = reproduce.split("\n\n").map(str::trim).filter(|b| !b.is_empty()).collect();
        let table = blocks.iter().find(|b| b.starts_with("| experiment | metric |")).context("no table of experiments (a line starting `| experiment | metric |`)")?;
        let claims = blocks.iter().find(|b| b.starts_with("```") && b.contains("Verdicts")).context("no block of claims (a ``` block with the verdict rule)")?;
        Ok(format!("{table}\n\n{claims}"))
    }
}

/// Replaces, in `document`, what sits between `extract`'s marker and the end marker with
/// `quoted`; `name` names the document in errors.
fn splice(document: &str, name: &str, extract: Extract, quoted: &str) -> Result<String> {
    let marker = extract.marker();
    let start = document.find(marker).with_context(|| format!("{name}: no `{marker}` marker"))? + marker.len();
    let Some(end) = document[start..].find(END).map(|e| start + e) else { bail!("{name}: `{marker}` has no `{END}` after it") };
    Ok(format!("{}\n\n{quoted}\n\n{}", &document[..start], &document[end..]))
}

/// Copies `source` (default: `runs/reproduce.md` under `root`) into the README and
/// docs/reproduce.md under `root`. Nothing is written unless both documents can take it.
pub fn publish(root: &Path, source: Option<&Path>) -> Result<()> {
    let source = source.map_or_else(|| root.join("runs/reproduce.md"), Path::to_path_buf);
    let reproduce = std::fs::read_to_string(&source).with_context(|| format!("{}: cannot read (run `cargo xtask reproduce` first)", source.display()))?;
    let mut updated = Vec::new();
    for (document, extract) in [("README.md", Extract::TableAndClaims), ("docs/reproduce.md", Extract::All)] {
        let path = root.join(document);
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let quoted = extract.of(&reproduce).with_context(|| format!("{}", source.display()))?;
        updated.push((path, splice(&text, document, extract, &quoted)?));
    }
    for (path, text) in updated {
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        println!("results: {} copied into {}", source.display(), path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPRODUCE: &str = "| experiment | metric |\n|---|---|\n| a | 1 |\n\n| experiment | seed 1 |\n|---|---:|\n| a | 1 |\n\n```\na beats b: holds.\nVerdicts compare seeds pairwise.\n```\n\nrouting\n";

    #[test]
    fn the_readme_quotes_the_main_table_and_the_claims() {
        let quoted = Extract::TableAndClaims.of(REPRODUCE).unwrap();
        assert_eq!(quoted, "| experiment | metric |\n|---|---|\n| a | 1 |\n\n```\na beats b: holds.\nVerdicts compare seeds pairwise.\n```");
        assert!(Extract::TableAndClaims.of("| experiment | seed 1 |\n").unwrap_err().to_string().contains("no table of experiments"));
    }

    #[test]
    fn only_the_marked_block_is_replaced() {
        let document = "intro\n<!-- results: all -->\nold\n<!-- end of results -->\nafter\n";
        let spliced = splice(document, "doc.md", Extract::All, "new").unwrap();
        assert_eq!(spliced, "intro\n<!-- results: all -->\n\nnew\n\n<!-- end of results -->\nafter\n");
        // Idempotent: a second copy of the same results changes nothing.
        assert_eq!(splice(&spliced, "doc.md", Extract::All, "new").unwrap(), spliced);
        let missing = splice("no markers", "doc.md", Extract::All, "new").unwrap_err().to_string();
        assert_eq!(missing, "doc.md: no `<!-- results: all -->` marker");
        let unclosed = splice("<!-- results: all -->\nold", "doc.md", Extract::All, "new").unwrap_err().to_string();
        assert!(unclosed.contains("has no `<!-- end of results -->` after it"), "{unclosed}");
    }
}
