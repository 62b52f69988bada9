//! `BPF_MAP_LOOKUP_BATCH` on a per-CPU array of `u64` (aya has no batch operations): a scrape
//! reads every rule counter in a few syscalls instead of one per rule.

use std::{io, os::fd::RawFd};

use super::{DatapathError, Result};

/// `enum bpf_cmd`: `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Keys read per syscall (bounds the buffer: `CHUNK * nr_cpus * 8` bytes).
const CHUNK: u32 = 4096;

/// The `batch` member of `union bpf_attr` (linux/bpf.h), padded to the union's size.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    _pad: [u64; 8],
}

fn io_err(source: io::Error) -> DatapathError {
    DatapathError::Io {
        path: "BPF_MAP_LOOKUP_BATCH".into(),
        source,
    }
}

/// Sum over CPUs of entries `0..n` of the per-CPU `u64` array `fd`.
pub fn per_cpu_sums(fd: RawFd, n: u32) -> Result<Vec<u64>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| io_err(e))?;
    let map_fd =
        u32::try_from(fd).map_err(|_| io_err(io::Error::from_raw_os_error(libc::EBADF)))?;
    let mut out = vec![0u64; n as usize];
    let mut keys = vec![0u32; CHUNK as usize];
    let mut values = vec![0u64; CHUNK as usize * cpus];
    // The kernel resumes after the key in `in_batch` (none: from the start) and writes the last
    // key it read to `out_batch`.
    let (mut prev, mut last, mut read) = (None::<u32>, 0u32, 0u32);
    while read < n {
        let want = CHUNK.min(n - read);
        let mut attr = BatchAttr {
            in_batch: prev.as_ref().map_or(0, |p| std::ptr::from_ref(p) as u64),
            out_batch: std::ptr::from_mut(&mut last) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers that hold `want` keys and `want * cpus` u64 values
        // (a per-CPU value takes 8 bytes per possible CPU), and at `prev`/`last`, all alive for
        // the call; the kernel writes at most `count` entries.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        // ENOENT: the end of the map was reached; `count` says how many entries came back.
        let end = err
            .as_ref()
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOENT));
        if let Some(e) = err.filter(|_| !end) {
            return Err(io_err(e));
        }
        let got = attr.count.min(want);
        for (key, per_cpu) in keys.iter().zip(values.chunks(cpus)).take(got as usize) {
            if let Some(slot) = out.get_mut(*key as usize) {
                *slot = per_cpu.iter().sum();
            }
        }
        if end || got == 0 {
            break;
        }
        read += got;
        prev = Some(last);
    }
    Ok(out)
}
