"""Speed of cairn against ONNX Runtime and tract on the corpus, same inputs, same run.

Columns (milliseconds, minimum over REPS repeats of the median of RUNS runs; engines are
interleaved within each repeat so that load drift hits them alike):
- one thread: cairn int8, cairn f32, ONNX Runtime fp32, ONNX Runtime int8 QDQ
  (`qdq.onnx`, made by bench.py with onnxruntime.quantization), tract fp32;
- two threads: cairn int8, ONNX Runtime fp32, ONNX Runtime int8 QDQ;
- ratios: cairn int8 over each, cairn f32 over ORT fp32 and tract, cairn 1 thread over
  2 threads (the scaling).

    cargo build --release -p cairn-cli
    .venv/bin/pip install tract==0.23.9          # optional: the tract column
    RUNS=10 REPS=2 .venv/bin/python models/corpus/speed.py [id1,id2,...]

Needs the corpus cache (models/corpus/fetch.py, inputs.py) and the converted models in
$CAIRN_CONVERTED/<id>/{int8.cairn,f32.cairn,qdq.onnx} (default target/corpus; bench.py
writes them). Writes speed.json and speed.md next to the converted models. The machine
should be otherwise idle: the figures are ratios, and load moves them. tract runs on one
thread (its default).
"""
import json, os, statistics, subprocess, sys, time

import numpy as np
import onnxruntime as ort

try:
    import tract
except ImportError:  # the column is left empty
    tract = None

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get('CAIRN_CORPUS', os.path.expanduser('~/.cache/cairn/corpus'))
CONV = os.environ.get('CAIRN_CONVERTED', os.path.join(ROOT, 'target/corpus'))
CAIRN = os.environ.get('CAIRN_BIN', os.path.join(ROOT, 'target/release/cairn'))
RUNS = int(os.environ.get('RUNS', '10'))
REPS = int(os.environ.get('REPS', '2'))
NAN = float('nan')


def timed(fn):
    fn()
    ts = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def ort_ms(path, feeds, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    return timed(lambda: s.run(None, feeds))


TRACT_DT = {np.dtype('float32'): 'f32', np.dtype('int64'): 'i64', np.dtype('int32'): 'i32'}


def tract_ms(path, names, feeds):
    m = tract.onnx().load(path)
    for i, name in enumerate(names):
        x = feeds[name]
        m.set_input_fact(i, ','.join(map(str, x.shape)) + ',' + TRACT_DT[x.dtype])
    r = m.into_model().into_runnable()
    xs = [feeds[n] for n in names]
    return timed(lambda: r.run(xs))


def cairn_ms(path, args, threads):
    r = subprocess.run([CAIRN, 'run', path, *args, '--runs', str(RUNS), '--threads', str(threads)],
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1].split()[0])


COLS = [('c8', 'cairn i8'), ('c32', 'cairn f32'), ('o32', 'ORT fp32'), ('o8', 'ORT i8'),
        ('tr', 'tract'), ('c8_2', 'cairn i8 t2'), ('o32_2', 'ORT fp32 t2'), ('o8_2', 'ORT i8 t2')]
RATIOS = [('c8/o32', 'c8', 'o32'), ('c8/o8', 'c8', 'o8'), ('c8/tr', 'c8', 'tr'),
          ('c32/o32', 'c32', 'o32'), ('c32/tr', 'c32', 'tr'), ('t2: c8/o32', 'c8_2', 'o32_2'),
          ('t2: c8/o8', 'c8_2', 'o8_2'), ('t1/t2', 'c8', 'c8_2')]


def main():
    corpus = json.load(open(f'{ROOT}/models/corpus/corpus.json'))
    models = corpus['models'] if isinstance(corpus, dict) else corpus
    ids = sys.argv[1].split(',') if len(sys.argv) > 1 else [m['id'] for m in models]
    rows = {}
    head = '| model | ' + ' | '.join(c for _, c in COLS) + ' | ' + ' | '.join(r for r, _, _ in RATIOS) + ' |'
    lines = [head, '|' + '---|' * (1 + len(COLS) + len(RATIOS))]
    print(head, flush=True)
    for mid in ids:
        onnx = f'{CACHE}/{mid}.onnx'
        so = ort.SessionOptions()
        so.log_severity_level = 3
        s = ort.InferenceSession(onnx, so, providers=['CPUExecutionProvider'])
        d = f'{CACHE}/{mid}/inputs/sample_000'
        feeds, args, names = {}, [], []
        for i in s.get_inputs():
            f = f"{d}/{i.name.replace('/', '_')}.npy"
            feeds[i.name] = np.load(f)
            names.append(i.name)
            args += ['--input', f'{i.name}={f}']
        qdq = f'{CONV}/{mid}/qdq.onnx'
        engines = {
            'c8': lambda: cairn_ms(f'{CONV}/{mid}/int8.cairn', args, 1),
            'c32': lambda: cairn_ms(f'{CONV}/{mid}/f32.cairn', args, 1),
            'o32': lambda: ort_ms(onnx, feeds, 1),
            'o8': lambda: ort_ms(qdq, feeds, 1),
            'tr': lambda: tract_ms(onnx, names, feeds),
            'c8_2': lambda: cairn_ms(f'{CONV}/{mid}/int8.cairn', args, 2),
            'o32_2': lambda: ort_ms(onnx, feeds, 2),
            'o8_2': lambda: ort_ms(qdq, feeds, 2),
        }
        if tract is None:
            engines['tr'] = lambda: NAN
        best, errors = {}, {}
        for _ in range(REPS):
            for key, fn in engines.items():
                try:
                    v = fn()
                except Exception as e:  # a row with a gap, and the reason in the JSON
                    v = NAN
                    errors[key] = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                best[key] = min(best.get(key, float('inf')), v) if v == v else best.get(key, NAN)
        rat = {r: best[a] / best[b] for r, a, b in RATIOS}
        rows[mid] = {'ms': best, 'ratios': rat, 'errors': errors}
        line = (f'| {mid} | ' + ' | '.join(f'{best[k]:.2f}' for k, _ in COLS) + ' | '
                + ' | '.join(f'{rat[r]:.2f}' for r, _, _ in RATIOS) + ' |')
        lines.append(line)
        print(line, flush=True)
    load = os.getloadavg()[0]
    meta = {'runs': RUNS, 'reps': REPS, 'load_at_end': load, 'onnxruntime': ort.__version__,
            'tract': tract.version() if tract else None, 'cairn': CAIRN}
    os.makedirs(CONV, exist_ok=True)
    json.dump({'meta': meta, 'models': rows}, open(f'{CONV}/speed.json', 'w'), indent=1)
    open(f'{CONV}/speed.md', 'w').write('\n'.join(lines) + f'\n\nload average at the end: {load:.2f}\n')
    print(f'load average at the end: {load:.2f}; wrote {CONV}/speed.json and speed.md')


if __name__ == '__main__':
    main()
