//! What the command lines say to a person: the README's advice, and answers that are not the
//! agent's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::wait_until;

/// The README: "If port 1232 is taken, run a copy of the example files on another port"
/// with exactly the command it gives. The copy's relative paths stay valid, and its port check
/// probes its own API, not the agent already on 1232.
#[test]
fn the_readme_advice_for_a_taken_port_gives_an_agent_of_its_own() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README");
    let advice = readme
        .lines()
        .find(|l| l.starts_with("mkdir my-agent && cp examples/"))
        .expect("the README gives the copy command on a line of its own");
    let work = tempfile::tempdir().expect("tmp");
    // What a fresh checkout has (this checkout's folder may hold a quick-start agent's data).
    let copy_from = work.path().join("examples");
    std::fs::create_dir(&copy_from).expect("mkdir");
    for f in ["agent.toml", "registry.toml"] {
        std::fs::copy(examples.join(f), copy_from.join(f)).expect("copy");
    }
    let port = support::free_port();
    let advice = advice.replace("1240", &port.to_string());
    let ran = std::process::Command::new("sh")
        .arg("-c")
        .arg(&advice)
        .current_dir(work.path())
        .status()
        .expect("sh");
    assert!(ran.success(), "{advice}");
    let dir = work.path().join("my-agent");
    let mut agent = support::agent_cmd()
        .args(["start", "--foreground", "-f"])
        .arg(dir.join("agent.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the copy");
    let out = dir.join("data/out/example.local.lp");
    let own_check = format!("PORT.agent-api.{port}");
    let found = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&out).is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with(&own_check) && l.contains(" value=1"))
        })
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        found,
        "the copy's port check does not see its own API on {port}:\n{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
}

/// Something else on the agent's port (a web server's error page): agentctl names it, and
/// never prints the page.
#[test]
fn agentctl_names_a_web_page_instead_of_printing_it() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        // Bounded: one answer per agentctl command below.
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "<!DOCTYPE HTML>\n<html><head><title>Error response</title></head>\
                        <body><h1>Error response</h1><p>Error code: 404</p></body></html>\n";
            let _ = write!(
                conn,
                "HTTP/1.1 404 File not found\r\nContent-Type: text/html;charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    for cmd in ["status", "ns"] {
        let out = support::agentctl(&addr)
            .arg(cmd)
            .output()
            .expect("agentctl");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            said.contains("web page") && said.contains("Error response"),
            "{cmd}: {said}"
        );
        assert!(!said.contains("<h1>"), "{cmd} printed the page: {said}");
    }
    let _ = server.join();
}
