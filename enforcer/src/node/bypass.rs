//! Datapaths that deliver into pods past the host-side veth. Cilium's BPF host routing and
//! Calico's eBPF mode hand a packet from the uplink (or another device) straight to the pod's
//! `eth0` with the `bpf_redirect_peer` helper: it never leaves through the host-side veth, so
//! `to_pod` never judges it and the pod's ingress policy is silently absent. This module finds
//! such programs: every BPF program on the tc ingress hook (tcx, or a legacy `cls_bpf` filter) of
//! every interface of the node's namespace whose instructions call `bpf_redirect_peer`.
//!
//! How a call is recognised: in a loaded program's instructions as the kernel reports them
//! (`BPF_OBJ_GET_INFO_BY_FD`, `xlated_prog_insns`), a helper call's immediate is the helper's
//! address minus `__bpf_call_base` (the verifier's rewrite), the same value bpftool resolves to a
//! name. Both addresses come from `/proc/kallsyms`. Reading them and the instructions needs
//! `CAP_SYS_ADMIN` and `CAP_SYSLOG`, which the agent holds only until it drops its privileges:
//! the check runs once, at startup (docs/deploy.md, "Datapaths that bypass the pod veth").

use std::{
    collections::BTreeMap,
    fmt,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Mutex,
};

use prometheus::{core::Collector, IntGaugeVec, Opts};

/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: the clsact qdisc's ingress filters.
const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
/// `BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD` (linux/bpf.h `enum bpf_cmd`).
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;

/// A program that delivers into pods past the veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    pub device: String,
    /// `tcx/ingress` or `tc/ingress` (a legacy `cls_bpf` filter).
    pub hook: &'static str,
    pub program: String,
    pub id: u32,
}

impl fmt::Display for Bypass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CNI bypass: program {} (id {}) on {} {} calls bpf_redirect_peer: packets it delivers \
             into pods skip the pod veth's to_pod hook, so ingress policy is not enforced for them \
             (Cilium BPF host routing / Calico eBPF are not supported: see docs/deploy.md)",
            self.program, self.id, self.device, self.hook
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BypassError {
    #[error("/proc/kallsyms: {0}")]
    Kallsyms(String),
    #[error("{what}: {source}")]
    Syscall {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] super::NodeError),
}

/// The immediate of a call to `bpf_redirect_peer` in this kernel's translated instructions.
pub fn redirect_peer_call() -> Result<i32, BypassError> {
    let text = std::fs::read_to_string("/proc/kallsyms")
        .map_err(|e| BypassError::Kallsyms(e.to_string()))?;
    call_offset(&text, "bpf_redirect_peer")
}

/// `symbol - __bpf_call_base` from a kallsyms listing.
fn call_offset(kallsyms: &str, symbol: &str) -> Result<i32, BypassError> {
    let find = |name: &str| {
        kallsyms
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, _, n) = (f.next()?, f.next()?, f.next()?);
                (n == name).then(|| u64::from_str_radix(addr, 16).ok())?
            })
            .filter(|a| *a != 0)
            .ok_or_else(|| {
                BypassError::Kallsyms(format!(
                    "no address for {name} (kernel.kptr_restrict, or no CAP_SYSLOG)"
                ))
            })
    };
    let (helper, base) = (find(symbol)?, find("__bpf_call_base")?);
    i32::try_from(i128::from(helper) - i128::from(base))
        .map_err(|_| BypassError::Kallsyms(format!("{symbol} is out of a call's reach")))
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 2], what: &'static str) -> Result<i64, BypassError> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 16usize) };
    if rc < 0 {
        return Err(BypassError::Syscall {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

/// The name and translated instructions of program `id`.
fn program(id: u32) -> Result<(String, Vec<u64>), BypassError> {
    let mut attr = [u64::from(id), 0];
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr, "BPF_PROG_GET_FD_BY_ID")?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) };
    // `struct bpf_prog_info` up to `name`: type, id, tag[8], jited_prog_len, xlated_prog_len,
    // jited_prog_insns, xlated_prog_insns, load_time, created_by_uid, nr_map_ids, map_ids,
    // name[16] (80 bytes, 10 u64s).
    let get_info = |info: &mut [u64; 10]| {
        let mut attr = [
            u64::from(fd.as_raw_fd().unsigned_abs()) | (80u64 << 32),
            info.as_mut_ptr() as u64,
        ];
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, "BPF_OBJ_GET_INFO_BY_FD")
    };
    let mut info = [0u64; 10];
    get_info(&mut info)?;
    let len = usize::try_from(info[2] >> 32).unwrap_or(0);
    let mut insns = vec![0u64; len / 8];
    info = [0; 10];
    info[2] = (len as u64) << 32;
    info[4] = insns.as_mut_ptr() as u64;
    get_info(&mut info)?;
    let name: Vec<u8> = info[8..10]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .take_while(|b| *b != 0)
        .collect();
    Ok((String::from_utf8_lossy(&name).into_owned(), insns))
}

/// Whether `insns` call the helper whose call immediate is `imm`.
fn calls(insns: &[u64], imm: i32) -> bool {
    insns.iter().any(|i| {
        let b = i.to_le_bytes();
        // code, dst|src regs (src 0: a helper, not a BPF-to-BPF or kfunc call), off, imm.
        b[0] == CALL && b[1] >> 4 == 0 && i32::from_le_bytes([b[4], b[5], b[6], b[7]]) == imm
    })
}

/// The programs on the tc ingress hooks of `interfaces` (name → ifindex) that call
/// `bpf_redirect_peer`.
pub fn scan(interfaces: &BTreeMap<String, u32>) -> Result<Vec<Bypass>, BypassError> {
    use aya::programs::{tc::TcAttachType, SchedClassifier};
    let imm = redirect_peer_call()?;
    let mut found = Vec::new();
    for (name, &ifindex) in interfaces {
        let mut programs: Vec<(&'static str, u32, String)> = Vec::new();
        if let Ok((_, infos)) = SchedClassifier::query_tcx(name, TcAttachType::Ingress) {
            for p in infos {
                programs.push(("tcx/ingress", p.id(), p.name_as_str().unwrap_or("").into()));
            }
        }
        for (id, prog) in super::netlink::tc_bpf_filters(ifindex, CLSACT_INGRESS)? {
            programs.push(("tc/ingress", id, prog));
        }
        for (hook, id, attached_as) in programs {
            let (program, insns) = program(id)?;
            if calls(&insns, imm) {
                found.push(Bypass {
                    device: name.clone(),
                    hook,
                    // The kernel's name of the program; tc's filter name if it has none.
                    program: if program.is_empty() {
                        attached_as
                    } else {
                        program
                    },
                    id,
                });
            }
        }
    }
    Ok(found)
}

/// What the startup check found, for `/metrics`.
#[derive(Default)]
pub struct Findings(Mutex<Option<Vec<Bypass>>>);

impl Findings {
    pub fn set(&self, found: Vec<Bypass>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(found);
    }

    /// `enforcer_cni_bypass{device, hook, program}`: 1 per program found (nothing before the
    /// check ran or when it could not).
    pub fn collectors(&self) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        let found = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(found) = found.as_ref() else {
            return Ok(Vec::new());
        };
        let g = IntGaugeVec::new(
            Opts::new(
                "enforcer_cni_bypass",
                "1 per BPF program found at startup on an interface's tc ingress that calls \
                 bpf_redirect_peer (delivers into pods past the veth: ingress policy is not \
                 enforced; the agent is not ready).",
            ),
            &["device", "hook", "program"],
        )?;
        for b in found {
            g.with_label_values(&[b.device.as_str(), b.hook, b.program.as_str()])
                .set(1);
        }
        Ok(vec![Box::new(g)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_the_helper_address_minus_the_call_base() {
        let kallsyms = "ffffffff814ded50 T __bpf_call_base\nffffffff81ee6c60 T bpf_redirect_peer\n";
        let imm = call_offset(kallsyms, "bpf_redirect_peer").expect("both present");
        assert_eq!(imm, 0x0a0_7f10, "0x81ee6c60 - 0x814ded50");
        let hidden = "0000000000000000 T __bpf_call_base\n0000000000000000 T bpf_redirect_peer\n";
        assert!(call_offset(hidden, "bpf_redirect_peer").is_err());
        let call = |imm: i32, src: u8| {
            let i = imm.to_le_bytes();
            u64::from_le_bytes([CALL, src << 4, 0, 0, i[0], i[1], i[2], i[3]])
        };
        assert!(calls(&[0, call(imm, 0)], imm));
        assert!(
            !calls(&[call(imm, 1)], imm),
            "a BPF-to-BPF call is not a helper call"
        );
        assert!(!calls(&[call(imm + 8, 0)], imm));
    }
}
