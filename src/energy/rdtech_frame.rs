//! The UM meters' 130-byte reply (the layout is in [`super`]'s documentation): decoded, checked
//! and laid out. Pure: no I/O, only `std` and `thiserror`, so that the fuzz target
//! (`fuzz/fuzz_targets/meter_frames.rs`) mounts this file by path.

/// The reply's length.
pub const FRAME_LEN: usize = 130;

/// The three models and their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    Um24c,
    Um25c,
    Um34c,
}

impl Model {
    pub fn from_id(id: u16) -> Option<Model> {
        match id {
            0x0963 => Some(Model::Um24c),
            0x09C9 => Some(Model::Um25c),
            0x0D4C => Some(Model::Um34c),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Model::Um24c => 0x0963,
            Model::Um25c => 0x09C9,
            Model::Um34c => 0x0D4C,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Um24c => "UM24C",
            Model::Um25c => "UM25C",
            Model::Um34c => "UM34C",
        }
    }

    /// Volts per voltage step and amps per current step.
    pub fn scales(self) -> (f64, f64) {
        match self {
            Model::Um25c => (0.001, 0.0001),
            Model::Um24c | Model::Um34c => (0.01, 0.001),
        }
    }
}

/// The bytes the UM34C's checksum (the last byte) is the XOR of (libsigrok's list).
pub const UM34C_CHECKSUM_BYTES: [usize; 32] = [
    1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67, 69, 73, 79, 83, 89, 97, 99, 109, 111, 113,
    119, 121, 127,
];

/// The UM34C's checksum of a reply.
pub fn um34c_checksum(frame: &[u8]) -> u8 {
    UM34C_CHECKSUM_BYTES.iter().fold(0, |x, &i| x ^ frame[i])
}

/// One reply, decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    pub model: Model,
    pub volts: f64,
    pub amps: f64,
    /// The power field (1 mW steps).
    pub watts_field: f64,
    /// The selected data group and its accumulated charge (mAh) and energy (mWh).
    pub group: u16,
    pub group_mah: u32,
    pub group_mwh: u32,
}

impl Frame {
    pub fn watts(&self) -> f64 {
        self.volts * self.amps
    }
}

/// Why a reply was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reply of {0} bytes, expected {FRAME_LEN}")]
    Length(usize),
    #[error("unknown model id 0x{0:04X} (expected 0x0963 UM24C, 0x09C9 UM25C or 0x0D4C UM34C)")]
    Model(u16),
    #[error("bad end marker 0x{0:04X} (expected 0xFFF1)")]
    EndMarker(u16),
    #[error("bad checksum 0x{got:02X} (computed 0x{want:02X})")]
    Checksum { got: u8, want: u8 },
    #[error("selected group {0} (expected 0 to 9)")]
    Group(u16),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one 130-byte reply, checking its model id and its end marker or checksum.
pub fn parse(frame: &[u8]) -> Result<Frame, FrameError> {
    if frame.len() != FRAME_LEN {
        return Err(FrameError::Length(frame.len()));
    }
    let id = be16(frame, 0);
    let model = Model::from_id(id).ok_or(FrameError::Model(id))?;
    match model {
        Model::Um34c => {
            let (got, want) = (frame[FRAME_LEN - 1], um34c_checksum(frame));
            if got != want {
                return Err(FrameError::Checksum { got, want });
            }
        }
        _ => {
            let end = be16(frame, FRAME_LEN - 2);
            if end != 0xFFF1 {
                return Err(FrameError::EndMarker(end));
            }
        }
    }
    let group = be16(frame, 14);
    if group > 9 {
        return Err(FrameError::Group(group));
    }
    let (v_step, a_step) = model.scales();
    let g = 16 + 8 * group as usize;
    Ok(Frame {
        model,
        volts: be16(frame, 2) as f64 * v_step,
        amps: be16(frame, 4) as f64 * a_step,
        watts_field: be32(frame, 6) as f64 / 1e3,
        group,
        group_mah: be32(frame, g),
        group_mwh: be32(frame, g + 4),
    })
}

/// A reply laid out as the meter sends it, from raw field values (voltage and current in the
/// model's steps); the other fields hold plausible constants. For tests and fakes.
pub fn encode(model: Model, volt_steps: u16, amp_steps: u16, group: u16, group_mwh: u32) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    let (vs, as_) = model.scales();
    let mw = (volt_steps as f64 * vs * amp_steps as f64 * as_ * 1e3).round() as u32;
    f[0..2].copy_from_slice(&model.id().to_be_bytes());
    f[2..4].copy_from_slice(&volt_steps.to_be_bytes());
    f[4..6].copy_from_slice(&amp_steps.to_be_bytes());
    f[6..10].copy_from_slice(&mw.to_be_bytes());
    f[10..12].copy_from_slice(&25u16.to_be_bytes());
    f[12..14].copy_from_slice(&77u16.to_be_bytes());
    f[14..16].copy_from_slice(&group.to_be_bytes());
    let g = 16 + 8 * group.min(9) as usize;
    f[g..g + 4].copy_from_slice(&(group_mwh / 5).to_be_bytes());
    f[g + 4..g + 8].copy_from_slice(&group_mwh.to_be_bytes());
    f[96..98].copy_from_slice(&60u16.to_be_bytes());
    f[98..100].copy_from_slice(&60u16.to_be_bytes());
    f[122..126].copy_from_slice(&85u32.to_be_bytes());
    match model {
        Model::Um34c => f[FRAME_LEN - 1] = um34c_checksum(&f),
        _ => f[128..130].copy_from_slice(&0xFFF1u16.to_be_bytes()),
    }
    f
}
