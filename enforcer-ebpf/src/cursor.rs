//! Bounds-checked reads of packet headers: the only `unsafe` of parsing. Each read checks the
//! header against `data_end` once and advances, as the verifier (and xdp-tools) like it.

use core::mem::{align_of, size_of};

use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

/// The packet could not be parsed (truncated, bad header, unsupported fragment).
pub struct Malformed;

/// A header type the cursor may read straight from packet memory.
///
/// # Safety
/// Implementors are `#[repr(C)]`, have alignment 1 (checked in `Cursor::read`) and consist of
/// integers and byte arrays only, so every bit pattern is a valid value.
pub unsafe trait Header: Copy {}

// SAFETY: `repr(C)` structs of `u8` and `[u8; N]` fields only (network-types 0.2).
unsafe impl Header for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: a byte array.
unsafe impl Header for [u8; 8] {}

/// A read position between the packet's `data` and `data_end`.
pub struct Cursor {
    pub pos: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(data: usize, data_end: usize) -> Cursor {
        Cursor {
            pos: data,
            end: data_end,
        }
    }

    /// The `T` at the cursor, if it lies inside the packet; advances past it.
    #[inline(always)]
    pub fn read<T: Header>(&mut self) -> Result<T, Malformed> {
        const { assert!(align_of::<T>() == 1) };
        let p = self.pos;
        if p + size_of::<T>() > self.end {
            return Err(Malformed);
        }
        self.pos = p + size_of::<T>();
        // SAFETY: `[p, p + size_of::<T>())` lies inside the packet (checked against `data_end`
        // just above, which is also the check the verifier tracks); `T` has alignment 1 and any
        // bit pattern is a valid `T` (`Header`), so reading it by value from packet memory is
        // sound.
        Ok(unsafe { *(p as *const T) })
    }

    /// Advance `n` bytes, if they lie inside the packet.
    #[inline(always)]
    pub fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        if self.pos + n > self.end {
            return Err(Malformed);
        }
        self.pos += n;
        Ok(())
    }
}
