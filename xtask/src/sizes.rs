//! `cargo xtask sizes`: production Rust files over [`MAX_FILE_LINES`] lines and functions over
//! [`MAX_FN_LINES`] lines, measured with `syn`.
//!
//! Production code is every `src/**/*.rs` and `build.rs` of the workspace's crates except the
//! tests crate (`tests/`), without `#[cfg(test)]` items and without the files of
//! `#[cfg(test)] mod NAME;` modules. A file counts its lines less those of its `#[cfg(test)]`
//! items; a function counts from its signature to its closing brace.
//!
//! Each remaining exception is named, with why, in [`ALLOWLIST`]. Under CI (`CI=true`) a
//! violation that the allowlist does not name fails the command; elsewhere it is reported only.
//! `--write` rewrites the allowlist from the tree: entries that still apply keep their reason,
//! new ones get a `TODO` reason that CI refuses until someone writes the real one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use syn::visit::Visit;

use crate::test::under_ci;
use crate::util::{banner, root};

/// Longest production file, in lines.
pub const MAX_FILE_LINES: usize = 600;
/// Longest production function, in lines.
pub const MAX_FN_LINES: usize = 60;
/// The allowlist, relative to the workspace root: `PATH | file | LINES | why` or
/// `PATH | fn NAME | LINES | why` (LINES: the size when written, for the reader; not checked).
const ALLOWLIST: &str = "xtask/sizes-allowlist.txt";
/// Top-level directories that are not production crates.
const NOT_PRODUCTION: [&str; 2] = ["tests", "target"];
/// The reason `--write` gives a new entry; CI refuses it.
const TODO: &str = "TODO: say why";

/// One file or function over its limit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    /// Path relative to the workspace root, `/`-separated.
    path: String,
    /// `file`, or `fn NAME` (`fn Type::name` for methods).
    item: String,
    lines: usize,
}

impl Violation {
    fn key(&self) -> (String, String) {
        (self.path.clone(), self.item.clone())
    }
}

/// `cargo xtask sizes [--write]`.
pub fn sizes(write: bool) -> Result<()> {
    banner("sizes");
    let violations = measure(root())?;
    let allowlist = read_allowlist(&root().join(ALLOWLIST))?;
    if write {
        write_allowlist(&root().join(ALLOWLIST), &violations, &allowlist)?;
        println!("wrote {ALLOWLIST}: {} entries", violations.len());
        return Ok(());
    }
    judge(&violations, &allowlist)
}

/// The step of `cargo xtask test`.
pub fn check() -> Result<()> {
    sizes(false)
}

/// Print every violation and stale entry; under CI, fail on any violation not allowed (or
/// allowed with a `TODO` reason).
fn judge(violations: &[Violation], allowlist: &BTreeMap<(String, String), String>) -> Result<()> {
    let mut refused = 0;
    println!(
        "limits: files {MAX_FILE_LINES} lines, functions {MAX_FN_LINES} lines (production code; \
         tests and #[cfg(test)] left out)"
    );
    for v in violations {
        let label = format!("{} {} ({} lines)", v.path, v.item, v.lines);
        match allowlist.get(&v.key()) {
            Some(why) if !why.starts_with("TODO") => println!("  allowed  {label}: {why}"),
            _ => {
                refused += 1;
                println!("  OVER     {label}: not in {ALLOWLIST}");
            }
        }
    }
    let current: BTreeSet<(String, String)> = violations.iter().map(Violation::key).collect();
    for (path, item) in allowlist.keys().filter(|k| !current.contains(*k)) {
        println!("  stale    {path} {item}: within its limit now; remove it from {ALLOWLIST}");
    }
    println!(
        "{} over the limits: {} allowed, {refused} not allowed",
        violations.len(),
        violations.len() - refused
    );
    if refused > 0 && under_ci() {
        bail!("{refused} file(s)/function(s) over the size limits and not in {ALLOWLIST}");
    }
    Ok(())
}

/// One parsed file: its lines, what it holds, and whether it is the file of a test module.
struct Measured {
    path: PathBuf,
    lines: usize,
    sizer: Sizer,
    in_test_module: bool,
}

/// Parse `files`, marking those of `#[cfg(test)] mod NAME;` modules declared among them.
fn read_files(files: Vec<PathBuf>) -> Result<Vec<Measured>> {
    let mut parsed = Vec::new();
    let mut test_modules = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut sizer = Sizer::default();
        sizer.visit_file(&ast);
        for name in &sizer.test_modules {
            test_modules.push(module_dir(&path).join(name));
        }
        let lines = text.lines().count();
        parsed.push(Measured {
            path,
            lines,
            sizer,
            in_test_module: false,
        });
    }
    for m in &mut parsed {
        m.in_test_module = test_modules.iter().any(|t| is_module_file(&m.path, t));
    }
    Ok(parsed)
}

/// Every violation of the production code under `root`, sorted.
fn measure(root: &Path) -> Result<Vec<Violation>> {
    let mut violations = Vec::new();
    for m in read_files(crate_files(root, &NOT_PRODUCTION)?)? {
        if m.in_test_module {
            continue;
        }
        let rel = relative(root, &m.path);
        let production = m.lines.saturating_sub(m.sizer.test_lines);
        if production > MAX_FILE_LINES {
            violations.push(Violation {
                path: rel.clone(),
                item: "file".into(),
                lines: production,
            });
        }
        for (name, fn_lines) in m.sizer.functions {
            if fn_lines > MAX_FN_LINES {
                violations.push(Violation {
                    path: rel.clone(),
                    item: format!("fn {name}"),
                    lines: fn_lines,
                });
            }
        }
    }
    violations.sort();
    Ok(violations)
}

/// `cargo xtask sizes --loc`: lines per crate (as `wc -l` counts them: blank and comment lines
/// included) of `src/` production code, of `src/` test code (`#[cfg(test)]` items and test
/// module files), and of `tests/` (integration tests).
pub fn loc() -> Result<()> {
    let root = root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    println!("| crate | src (production) | src (tests) | tests/ |\n|---|---:|---:|---:|");
    for dir in dirs {
        let (mut production, mut test) = (0, 0);
        for m in read_files(crate_src_files(&dir)?)? {
            if m.in_test_module {
                test += m.lines;
            } else {
                production += m.lines - m.sizer.test_lines.min(m.lines);
                test += m.sizer.test_lines.min(m.lines);
            }
        }
        let mut integration = Vec::new();
        rust_files(&dir.join("tests"), &mut integration)?;
        let mut integration_lines = 0;
        for f in integration {
            integration_lines += std::fs::read_to_string(&f)?.lines().count();
        }
        println!(
            "| `{}` | {production} | {test} | {integration_lines} |",
            relative(root, &dir)
        );
    }
    Ok(())
}

/// `src/**/*.rs` and `build.rs` of each crate directly under `root` (a directory with a
/// `Cargo.toml`), except those named in `skip`.
fn crate_files(root: &Path, skip: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let dir = entry?.path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if dir.join("Cargo.toml").is_file() && !skip.contains(&name) {
            files.extend(crate_src_files(&dir)?);
        }
    }
    files.sort();
    Ok(files)
}

/// `src/**/*.rs` and `build.rs` of the crate in `dir`.
fn crate_src_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.join("build.rs").is_file() {
        files.push(dir.join("build.rs"));
    }
    rust_files(&dir.join("src"), &mut files)?;
    Ok(files)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The directory of the child modules of the module in `file`.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("lib" | "main" | "mod" | "build") | None => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
    }
}

/// Whether `path` is the file of module `module` (`module.rs`) or below it (`module/**`).
fn is_module_file(path: &Path, module: &Path) -> bool {
    path == module.with_extension("rs") || path.starts_with(module)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// What one file holds: its functions with their lengths, the lines of its `#[cfg(test)]`
/// items, and the names of its out-of-line `#[cfg(test)]` modules.
#[derive(Default)]
struct Sizer {
    functions: Vec<(String, usize)>,
    test_lines: usize,
    test_modules: Vec<String>,
    /// The type of the `impl` block being walked.
    impl_type: Option<String>,
}

impl Sizer {
    fn function(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let start = sig_start(sig);
        let end = block.brace_token.span.close().end().line;
        let name = match &self.impl_type {
            Some(ty) => format!("{ty}::{name}"),
            None => name.to_string(),
        };
        self.functions.push((name, end + 1 - start));
    }

    /// Whether `item` is a `#[cfg(test)]` item: then its lines are counted as test lines (an
    /// out-of-line module is remembered) and it is not walked.
    fn test_item(&mut self, attrs: &[syn::Attribute], item: &syn::Item) -> bool {
        if !attrs.iter().any(is_cfg_test) {
            return false;
        }
        if let syn::Item::Mod(m) = item {
            if m.content.is_none() {
                self.test_modules.push(m.ident.to_string());
                return true;
            }
        }
        let span = syn::spanned::Spanned::span(item);
        self.test_lines += span.end().line + 1 - span.start().line;
        true
    }
}

impl<'ast> Visit<'ast> for Sizer {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !self.test_item(item_attrs(item), item) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.function(&f.sig.ident, &f.sig, &f.block);
        // A fn nested in a fn is named on its own.
        let outer = self.impl_type.take();
        syn::visit::visit_item_fn(self, f);
        self.impl_type = outer;
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let outer = self.impl_type.replace(type_name(&i.self_ty));
        syn::visit::visit_item_impl(self, i);
        self.impl_type = outer;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if f.attrs.iter().any(is_cfg_test) {
            return;
        }
        self.function(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        let outer = self.impl_type.replace(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.impl_type = outer;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// The first line of a signature (its qualifiers or `fn`).
fn sig_start(sig: &syn::Signature) -> usize {
    let first = sig
        .constness
        .map(|t| t.span)
        .or(sig.asyncness.map(|t| t.span))
        .or(sig.unsafety.map(|t| t.span))
        .unwrap_or(sig.fn_token.span);
    first.start().line
}

/// `Foo` of `impl Foo`, `impl<T> Foo<T>` or `impl Trait for Foo`.
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map_or_else(String::new, |s| s.ident.to_string()),
        other => quote_free(other),
    }
}

/// A type that is not a path, as a short label (`&T`, tuples, …).
fn quote_free(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Reference(r) => format!("&{}", type_name(&r.elem)),
        _ => "_".into(),
    }
}

/// Whether an attribute is `#[cfg(...)]` naming `test` (and not `not(...)`).
fn is_cfg_test(attr: &syn::Attribute) -> bool {
    if !attr.path().is_ident("cfg") {
        return false;
    }
    let syn::Meta::List(list) = &attr.meta else {
        return false;
    };
    let text = list.tokens.to_string();
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    words.contains(&"test") && !words.contains(&"not")
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        _ => &[],
    }
}

/// The allowlist: `(path, item)` → why. Blank lines and `#` comments are skipped.
fn read_allowlist(path: &Path) -> Result<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(out);
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, '|').map(str::trim).collect();
        let [file, item, _lines, why] = fields[..] else {
            bail!(
                "{}:{}: expected `PATH | file | LINES | why` or `PATH | fn NAME | LINES | why`",
                path.display(),
                i + 1
            );
        };
        if why.is_empty() {
            bail!("{}:{}: the entry says not why", path.display(), i + 1);
        }
        out.insert((file.to_owned(), item.to_owned()), why.to_owned());
    }
    Ok(out)
}

fn write_allowlist(
    path: &Path,
    violations: &[Violation],
    old: &BTreeMap<(String, String), String>,
) -> Result<()> {
    let mut text = format!(
        "# Production code over the size limits of `cargo xtask sizes` (files {MAX_FILE_LINES} \
         lines, functions {MAX_FN_LINES}),\n# each with why it remains. Regenerate with \
         `cargo xtask sizes --write`, then write the reasons.\n# PATH | file or fn NAME | lines \
         when written | why\n"
    );
    for v in violations {
        let why = old.get(&v.key()).map_or(TODO, String::as_str);
        let _ = writeln!(text, "{} | {} | {} | {why}", v.path, v.item, v.lines);
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizer(src: &str) -> Sizer {
        let mut s = Sizer::default();
        s.visit_file(&syn::parse_file(src).unwrap());
        s
    }

    #[test]
    fn functions_count_from_signature_to_closing_brace() {
        let s = sizer(
            "/// doc\n#[inline]\npub fn a() {\n    let x = 1;\n}\n\
             struct S;\nimpl S {\n    pub async fn b(&self) {}\n}\n",
        );
        assert_eq!(s.functions, vec![("a".into(), 3), ("S::b".into(), 1)]);
    }

    #[test]
    fn test_items_are_left_out_and_test_modules_remembered() {
        let s = sizer(
            "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn long() {\n\n\n    }\n}\n\
             #[cfg(test)]\nmod cases;\n#[cfg(not(test))]\nfn b() {}\n",
        );
        assert_eq!(
            s.functions.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(s.test_lines, 7);
        assert_eq!(s.test_modules, ["cases"]);
    }

    #[test]
    fn module_files_follow_rust_rules() {
        assert_eq!(module_dir(Path::new("a/src/lib.rs")), Path::new("a/src"));
        assert_eq!(
            module_dir(Path::new("a/src/policy.rs")),
            Path::new("a/src/policy")
        );
        let m = Path::new("a/src/policy/tests");
        assert!(is_module_file(Path::new("a/src/policy/tests.rs"), m));
        assert!(is_module_file(Path::new("a/src/policy/tests/cases.rs"), m));
        assert!(!is_module_file(Path::new("a/src/policy/testsuite.rs"), m));
    }
}
