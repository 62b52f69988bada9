//! `enforcer-cni`: the chained CNI plugin (see `enforcer::cni`). Reads the network configuration
//! on stdin and `CNI_*` from the environment; prints the result or the CNI error on stdout.

use std::{io::Read, process::ExitCode};

use enforcer::cni::{self, CniError, Invocation, SocketAgent};

fn main() -> ExitCode {
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
        return fail(
            &CniError::InvalidEnvironment(format!("reading stdin: {e}")),
            "1.0.0",
        );
    }
    let version = serde_json::from_str::<cni::NetConf>(&stdin)
        .map_or_else(|_| "1.0.0".to_string(), |c| c.cni_version);
    let result = Invocation::from_env(|k| std::env::var(k).ok())
        .and_then(|inv| cni::run(&inv, &stdin, &SocketAgent));
    match result {
        Ok(serde_json::Value::Null) => ExitCode::SUCCESS,
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, &version),
    }
}

fn fail(e: &CniError, version: &str) -> ExitCode {
    println!("{}", e.to_json(version));
    eprintln!("enforcer-cni: {e}");
    ExitCode::FAILURE
}
