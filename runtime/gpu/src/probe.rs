//! Test support: runs the WGSL exact f32 helpers (`f32_add`, `f32_div` in `int8.wgsl`) on
//! given operands, so a test can hold them to IEEE 754 bit for bit on many more values
//! than the ops that use them (where an error of one ulp seldom changes an int8 output).

use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROBE_WGSL: &str = "
@compute @workgroup_size(64)
fn exact_f32_probe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = word_index(gid, nwg);
    if (2u * i + 1u >= arrayLength(&weights)) {
        return;
    }
    let a = weights[2u * i];
    let b = weights[2u * i + 1u];
    arena[2u * i] = f32_add(a, b);
    arena[2u * i + 1u] = f32_div(a & 0x7fffffffu, b & 0x7fffffffu);
}
";

/// For each pair of f32 bit patterns `(a, b)`, the GPU's `(f32_add(a, b), f32_div(|a|,
/// |b|))`. The helpers' contract: finite operands with a finite result, `b ≠ ±0` for the
/// division. `None` when there is no adapter or the device fails.
#[doc(hidden)]
pub fn exact_f32_probe(pairs: &[(u32, u32)]) -> Option<Vec<(u32, u32)>> {
    if pairs.is_empty() {
        return Some(Vec::new());
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .ok()?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).ok()?;
    let source = format!("{}\n{}", crate::shader_source(false), PROBE_WGSL);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("exact f32 probe"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("exact f32 probe"),
        layout: None,
        module: &module,
        entry_point: Some("exact_f32_probe"),
        compilation_options: Default::default(),
        cache: None,
    });
    let words: Vec<u8> = pairs
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .flat_map(u32::to_le_bytes)
        .collect();
    let bytes = words.len() as u64;
    let input = crate::buffer_init(
        &device,
        &queue,
        "probe in",
        &words,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    );
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe out"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe read"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[crate::entry(0, &output), crate::entry(1, &input)],
    });
    let groups = u32::try_from(pairs.len().div_ceil(crate::WORKGROUP as usize)).ok()?;
    let gx = groups.min(crate::MAX_GROUPS_X);
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(gx, groups.div_ceil(gx), 1);
    }
    encoder.copy_buffer_to_buffer(&output, 0, &read, 0, bytes);
    queue.submit([encoder.finish()]);
    let mapped: Arc<Mutex<Option<bool>>> = Arc::default();
    {
        let slot = mapped.clone();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(r.is_ok());
            }
        });
    }
    device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_secs(60)),
        })
        .ok()?;
    if mapped.lock().ok()?.as_ref() != Some(&true) {
        return None;
    }
    let view = read.slice(..).get_mapped_range().ok()?;
    let word = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    Some(
        view.chunks_exact(8)
            .map(|c| (word(&c[..4]), word(&c[4..])))
            .collect(),
    )
}
