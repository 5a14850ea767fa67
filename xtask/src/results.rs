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
//! <!-- results: extras -->             (docs/reproduce.md: the whole file of a reproduction
//! ...                                   of the experiments `--all` adds, run alone;
//! <!-- end of results -->               `cargo xtask results --extras FILE`)
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
    /// The whole file of a reproduction of the experiments tagged `all` alone.
    Extras,
}

impl Extract {
    fn marker(self) -> &'static str {
        match self {
            Self::TableAndClaims => "<!-- results: table and claims -->",
            Self::All => "<!-- results: all -->",
            Self::Extras => "<!-- results: extras -->",
        }
    }

    /// The part of `reproduce` (the text of `runs/reproduce.md`) this extract quotes.
    fn of(self, reproduce: &str) -> Result<String> {
        if self != Self::TableAndClaims {
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
    publish_into(root, &source, &[("README.md", Extract::TableAndClaims), ("docs/reproduce.md", Extract::All)])
}

/// Copies `source`, the table of a reproduction of the experiments `--all` adds to the default,
/// run alone, into docs/reproduce.md's extras block.
pub fn publish_extras(root: &Path, source: &Path) -> Result<()> {
    publish_into(root, source, &[("docs/reproduce.md", Extract::Extras)])
}

/// Copies what each `(document, extract)` quotes of `source` into that document under `root`;
/// nothing is written unless every document can take it.
fn publish_into(root: &Path, source: &Path, targets: &[(&str, Extract)]) -> Result<()> {
    let reproduce = std::fs::read_to_string(source).with_context(|| format!("{}: cannot read (run `cargo xtask reproduce` first)", source.display()))?;
    let mut updated = Vec::new();
    for &(document, extract) in targets {
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
    fn extras_go_whole_into_their_own_block_of_docs_reproduce_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("docs")).unwrap();
        let readme = "<!-- results: table and claims -->\nold table\n<!-- end of results -->\n";
        std::fs::write(root.path().join("README.md"), readme).unwrap();
        let docs = "<!-- results: all -->\ndefault\n<!-- end of results -->\n<!-- results: extras -->\nold\n<!-- end of results -->\n";
        std::fs::write(root.path().join("docs/reproduce.md"), docs).unwrap();
        let extras = root.path().join("extras.md");
        std::fs::write(&extras, "| experiment | metric |\n|---|---|\n| digits/mope | 99 |\n").unwrap();
        publish_extras(root.path(), &extras).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("README.md")).unwrap(), readme);
        let written = std::fs::read_to_string(root.path().join("docs/reproduce.md")).unwrap();
        assert_eq!(
            written,
            "<!-- results: all -->\ndefault\n<!-- end of results -->\n<!-- results: extras -->\n\n| experiment | metric |\n|---|---|\n| digits/mope | 99 |\n\n<!-- end of results -->\n"
        );
        let missing = publish_extras(root.path(), &root.path().join("none.md")).unwrap_err();
        assert!(format!("{missing:#}").contains("none.md: cannot read"), "{missing:#}");
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
