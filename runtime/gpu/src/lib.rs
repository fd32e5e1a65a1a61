//! cairn-gpu: an accelerator for cairn's heterogeneous driver (`cairn_kernels::hetero`)
//! on any GPU wgpu reaches (Vulkan, Metal, D3D12; headless on Mesa lavapipe).
//!
//! The model's bytes (weights, biases, scales, tables) are uploaded once, when the
//! accelerator is created; so are every op's parameter words and the pipelines. The GPU
//! keeps a copy of the arena with the same plan: a segment uploads its inputs, runs its
//! ops in one command buffer, and reads back only its outputs, which go to the driver's
//! staging buffer. Every wait for the device has a deadline ([`GpuFactory::timeout`]); a
//! missed one, a lost device or any error reported by wgpu fails the segment, and the
//! driver reruns it on the CPU. Nothing here panics on a device failure: wgpu's
//! uncaptured-error and device-lost handlers only record what happened.
//!
//! int8 results equal the reference kernels' bit for bit (see `int8.wgsl`:
//! integer accumulation wraps like the reference, and requantization is the reference's
//! one f32 multiply, float clamp and round-half-to-even). Where a reference kernel divides or
//! calls `expf` (Softmax, bilinear Resize), `exact.rs` makes tables and `int8.wgsl` does the
//! rest in integer arithmetic, so those ops equal the reference too.

mod exact;
mod kernels;
mod probe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_core::accel::{AccelError, AccelFactory, Accelerator};
use cairn_core::partition::{
    arena_range, segment_inputs, segment_outputs, OpSupport, Partition, Placement, Segment,
};
use cairn_core::Model;

pub use kernels::{encode, encode_op, Kernel};
pub use probe::exact_f32_probe;

const WORKGROUP: u32 = 64;
const MAX_GROUPS_X: u32 = 65_535;

/// Makes GPU accelerators.
#[derive(Clone, Debug)]
pub struct GpuFactory {
    /// Longest wait for one segment (upload, run, read back).
    pub timeout: Duration,
    /// Longest wait for the uploads when an accelerator is created.
    pub load_timeout: Duration,
    /// Use `dot4I8Packed` when the WGSL implementation has it (on by default).
    pub packed_dot: bool,
}

impl Default for GpuFactory {
    fn default() -> GpuFactory {
        GpuFactory {
            timeout: Duration::from_secs(10),
            load_timeout: Duration::from_secs(30),
            packed_dot: true,
        }
    }
}

impl OpSupport for GpuFactory {
    fn supports_op(&self, model: &Model<'_>, op: usize) -> bool {
        // An op is claimed only when its tables can be made (they are made again when the
        // accelerator is created: the factory keeps no per-model state).
        kernels::encode_op(model, op).is_some_and(|dispatches| {
            dispatches
                .into_iter()
                .all(|mut e| kernels::tables(model, op, &mut e).is_some())
        })
    }
}

/// What the device is, for a report.
#[derive(Clone, Debug)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// Whether the FullyConnected kernel uses `dot4I8Packed`.
    pub packed_dot: bool,
}

/// The first adapter wgpu offers, described; `None` when there is none.
pub fn probe() -> Option<AdapterInfo> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .ok()?;
    let info = adapter.get_info();
    Some(AdapterInfo {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        packed_dot: packed_dot_available(&instance),
    })
}

fn packed_dot_available(instance: &wgpu::Instance) -> bool {
    instance
        .wgsl_language_features()
        .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct)
}

/// Device failures reported through wgpu's callbacks.
#[derive(Default)]
struct Health {
    lost: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Health {
    fn check(&self) -> Result<(), AccelError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(AccelError::DeviceLost);
        }
        match self.error.lock() {
            Ok(e) if e.is_none() => Ok(()),
            _ => Err(AccelError::Device),
        }
    }
}

struct OpWork {
    pipeline: usize,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32),
}

pub struct GpuAccel {
    device: wgpu::Device,
    queue: wgpu::Queue,
    health: Arc<Health>,
    arena: wgpu::Buffer,
    readback: wgpu::Buffer,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// Per op of the model, its dispatches (one per output for Split); none for ops not
    /// placed here.
    ops: Vec<Vec<OpWork>>,
    /// Per accelerator segment: the arena ranges it copies in and out.
    transfers: Vec<Transfers>,
    timeout: Duration,
    info: AdapterInfo,
}

struct Transfers {
    segment: Segment,
    inputs: Vec<std::ops::Range<usize>>,
    outputs: Vec<std::ops::Range<usize>>,
}

impl GpuAccel {
    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }
}

impl AccelFactory for GpuFactory {
    type Accel = GpuAccel;
    fn name(&self) -> &'static str {
        "gpu"
    }
    fn create(&mut self, model: &Model<'_>, partition: &Partition) -> Result<GpuAccel, AccelError> {
        create(self, model, partition)
    }
}

fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn shader_source(packed_dot: bool) -> String {
    let dot = if packed_dot {
        include_str!("dot_packed.wgsl")
    } else {
        include_str!("dot_plain.wgsl")
    };
    format!("{}\n{}", include_str!("int8.wgsl"), dot)
}

fn create(
    f: &GpuFactory,
    model: &Model<'_>,
    partition: &Partition,
) -> Result<GpuAccel, AccelError> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|_| AccelError::Unavailable)?;
    let packed_dot = f.packed_dot && packed_dot_available(&instance);
    let ai = adapter.get_info();
    let info = AdapterInfo {
        name: ai.name,
        backend: format!("{:?}", ai.backend),
        device_type: format!("{:?}", ai.device_type),
        packed_dot,
    };
    let limits = adapter.limits();
    // Every op placed here, encoded; its tables (Add/Mul results, gather sources,
    // thresholds...) follow the model's bytes.
    let mut weights_data = model.bytes().to_vec();
    let mut work = Vec::new();
    for seg in partition
        .segments()
        .iter()
        .filter(|s| s.placement != Placement::Cpu)
    {
        for op in seg.ops() {
            for mut enc in kernels::encode_op(model, op).ok_or(AccelError::Unsupported)? {
                let blobs = kernels::tables(model, op, &mut enc).ok_or(AccelError::Unsupported)?;
                for (slot, bytes) in blobs {
                    weights_data.resize(weights_data.len().div_ceil(16) * 16, 0);
                    enc.params[slot] =
                        i32::try_from(weights_data.len()).map_err(|_| AccelError::Unsupported)?;
                    weights_data.extend_from_slice(&bytes);
                }
                work.push((op, enc));
            }
        }
    }
    weights_data.resize(round4(weights_data.len()).max(4), 0);
    let arena_bytes = round4(model.arena_bytes()).max(4) + 16;
    let binding_max = limits.max_storage_buffer_binding_size as u64;
    if weights_data.len() as u64 > binding_max || arena_bytes as u64 > binding_max {
        return Err(AccelError::Unsupported);
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("cairn"),
        required_limits: wgpu::Limits {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            ..wgpu::Limits::downlevel_defaults()
        },
        ..Default::default()
    }))
    .map_err(|_| AccelError::Unavailable)?;
    let health = Arc::new(Health::default());
    {
        let h = health.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = h.error.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let h = health.clone();
        device.set_device_lost_callback(move |_, _| h.lost.store(true, Ordering::SeqCst));
    }

    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("cairn int8"),
        source: wgpu::ShaderSource::Wgsl(shader_source(packed_dot).into()),
    });
    let layout_entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    // One layout for every kernel (a kernel that ignores a binding still takes it).
    let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("cairn int8"),
        entries: &[
            layout_entry(0, wgpu::BufferBindingType::Storage { read_only: false }),
            layout_entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
            layout_entry(2, wgpu::BufferBindingType::Uniform),
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("cairn int8"),
        bind_group_layouts: &[Some(&bind_layout)],
        immediate_size: 0,
    });
    let pipelines: Vec<wgpu::ComputePipeline> = kernels::Kernel::ALL
        .iter()
        .map(|k| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(k.entry()),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect();
    if pollster::block_on(scope.pop()).is_some() {
        return Err(AccelError::Compile);
    }

    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let weights = buffer_init(&device, &queue, "weights", &weights_data, usage);
    let arena = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("arena"),
        size: arena_bytes as u64,
        usage: usage | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: arena_bytes as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let mut ops: Vec<Vec<OpWork>> = (0..model.n_ops()).map(|_| Vec::new()).collect();
    for (op, enc) in work {
        {
            let pipeline = kernels::Kernel::ALL
                .iter()
                .position(|k| *k == enc.kernel)
                .ok_or(AccelError::Unsupported)?;
            let bytes: Vec<u8> = enc.params.iter().flat_map(|w| w.to_le_bytes()).collect();
            let params = buffer_init(
                &device,
                &queue,
                "params",
                &bytes,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &bind_layout,
                entries: &[entry(0, &arena), entry(1, &weights), entry(2, &params)],
            });
            let words = enc.numel.div_ceil(4);
            let groups = words.div_ceil(WORKGROUP).max(1);
            let gx = groups.min(MAX_GROUPS_X);
            let gy = groups.div_ceil(gx);
            if gy > MAX_GROUPS_X {
                return Err(AccelError::Unsupported);
            }
            ops[op].push(OpWork {
                pipeline,
                bind_group,
                groups: (gx, gy),
            });
        }
    }
    queue.submit([]);
    let accel = GpuAccel {
        device,
        queue,
        health,
        arena,
        readback,
        pipelines,
        ops,
        transfers: partition
            .segments()
            .iter()
            .filter(|s| s.placement != Placement::Cpu)
            .map(|&segment| Transfers {
                segment,
                inputs: segment_inputs(model, segment)
                    .filter_map(|t| arena_range(model, t))
                    .collect(),
                outputs: segment_outputs(model, segment)
                    .filter_map(|t| arena_range(model, t))
                    .collect(),
            })
            .collect(),
        timeout: f.timeout,
        info,
    };
    accel.wait(None, f.load_timeout)?;
    accel.health.check()?;
    Ok(accel)
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

fn buffer_init(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    data: &[u8],
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: data.len() as u64,
        usage,
        mapped_at_creation: false,
    });
    queue.write_buffer(&b, 0, data);
    b
}

impl GpuAccel {
    /// Wait for `submission` (or everything submitted) within the deadline.
    fn wait(
        &self,
        submission: Option<wgpu::SubmissionIndex>,
        timeout: Duration,
    ) -> Result<(), AccelError> {
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: submission,
            timeout: Some(timeout),
        }) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(AccelError::Timeout),
            Err(_) => Err(AccelError::Device),
        }
    }
}

impl GpuAccel {
    /// Submit `encoder`, map `buffer` (whole), wait within the deadline, and read it.
    fn read_back<T>(
        &self,
        encoder: wgpu::CommandEncoder,
        buffer: &wgpu::Buffer,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, AccelError> {
        let submission = self.queue.submit([encoder.finish()]);
        let mapped: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::default();
        {
            let slot = mapped.clone();
            buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(r);
                }
            });
        }
        let waited = self.wait(Some(submission), self.timeout);
        let map_result = mapped.lock().map(|s| s.clone()).unwrap_or(None);
        waited.and(self.health.check())?;
        match map_result {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err(self.health.check().err().unwrap_or(AccelError::Device)),
            None => return Err(AccelError::Timeout),
        }
        let out = {
            let view = buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|_| AccelError::Device)?;
            read(&view)
        };
        buffer.unmap();
        Ok(out)
    }
}

impl Accelerator for GpuAccel {
    fn run_segment(
        &mut self,
        _model: &Model<'_>,
        segment: Segment,
        arena: &[u8],
        staging: &mut [u8],
    ) -> Result<(), AccelError> {
        self.health.check()?;
        let mut upload = Vec::new();
        let io = self
            .transfers
            .iter()
            .find(|t| t.segment == segment)
            .ok_or(AccelError::Unsupported)?;
        for r in &io.inputs {
            upload.clear();
            upload.extend_from_slice(&arena[r.clone()]);
            upload.resize(round4(r.len()), 0);
            self.queue
                .write_buffer(&self.arena, r.start as u64, &upload);
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in segment.ops() {
                let dispatches = self
                    .ops
                    .get(op)
                    .filter(|d| !d.is_empty())
                    .ok_or(AccelError::Unsupported)?;
                for work in dispatches {
                    pass.set_pipeline(&self.pipelines[work.pipeline]);
                    pass.set_bind_group(0, &work.bind_group, &[]);
                    pass.dispatch_workgroups(work.groups.0, work.groups.1, 1);
                }
            }
        }
        let outputs = &io.outputs;
        for r in outputs {
            let (at, len) = (r.start as u64, round4(r.len()) as u64);
            encoder.copy_buffer_to_buffer(&self.arena, at, &self.readback, at, len);
        }
        self.read_back(encoder, &self.readback, |view| {
            for r in outputs {
                staging[r.clone()].copy_from_slice(&view[r.clone()]);
            }
        })
    }
}
