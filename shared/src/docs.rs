//! Man pages and shell completions, generated from a binary's clap definition so they never
//! drift from its `--help`. Both binaries expose this as a hidden `generate-docs DIR`
//! subcommand; the Debian package is built with it (packaging/build-deb.sh).

use std::io;
use std::path::Path;

use clap::Command;
use clap_complete::Shell;

/// Writes into `dir`: `man/NAME.1` and one page per subcommand (`NAME-start.1`, as git does),
/// and `completions/NAME.bash`, `completions/_NAME` (zsh), `completions/NAME.fish`.
pub fn generate(cmd: Command, dir: &Path) -> io::Result<Vec<String>> {
    let name = cmd.get_name().to_owned();
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut written = Vec::new();
    let mut cmd = cmd;
    cmd.build();
    write_pages(&cmd, &name, &man, &mut written)?;
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut out);
        std::fs::write(completions.join(&file), out)?;
        written.push(format!("completions/{file}"));
    }
    Ok(written)
}

/// The page of `cmd` (named `page`), then one per visible subcommand, recursively.
fn write_pages(cmd: &Command, page: &str, dir: &Path, written: &mut Vec<String>) -> io::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(page.to_owned())
        .render(&mut out)?;
    let file = format!("{page}.1");
    std::fs::write(dir.join(&file), out)?;
    written.push(format!("man/{file}"));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{page}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_every_visible_subcommand() {
        let cmd = Command::new("demo")
            .about("A demo.")
            .subcommand(Command::new("start").about("Starts."))
            .subcommand(Command::new("secret").hide(true));
        let dir = tempfile::tempdir().expect("tmp");
        let written = generate(cmd, dir.path()).expect("generate");
        assert_eq!(
            written,
            [
                "man/demo.1",
                "man/demo-start.1",
                "completions/demo.bash",
                "completions/_demo",
                "completions/demo.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/demo-start.1")).expect("page");
        assert!(
            page.contains(".TH demo-start 1") && page.contains("Starts."),
            "{page}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/demo.bash")).expect("bash");
        assert!(bash.contains("start"), "{bash}");
    }
}
