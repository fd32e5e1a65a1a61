"""cairn int8 at 1 and 2 threads against ONNX Runtime fp32 at 1 and 2 threads (and ORT int8
QDQ at 2), same inputs, same run, minimum over repeats of the median of RUNS runs.

    cargo build --release -p cairn-cli
    RUNS=10 REPS=2 .venv/bin/python models/corpus/speed.py [id1,id2,...]

Needs the corpus cache (models/corpus/fetch.py, inputs.py) and the converted models in
target/corpus/<id>/{int8.cairn,qdq.onnx} (bench.py writes them). The machine should be
otherwise idle: the figures are ratios, and load moves them.
"""
import json, os, statistics, subprocess, sys, time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.expanduser('~/.cache/cairn/corpus')
CAIRN = os.path.join(ROOT, 'target/release/cairn')
RUNS = int(os.environ.get('RUNS', '10'))
REPS = int(os.environ.get('REPS', '2'))


def ort_ms(path, feeds, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    s.run(None, feeds)
    ts = []
    for _ in range(RUNS):
        t = time.perf_counter()
        s.run(None, feeds)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def cairn_ms(mid, args, threads):
    r = subprocess.run([CAIRN, 'run', f'{ROOT}/target/corpus/{mid}/int8.cairn', *args,
                        '--runs', str(RUNS), '--threads', str(threads)],
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1].split()[0])


def main():
    corpus = json.load(open(f'{ROOT}/models/corpus/corpus.json'))
    models = corpus['models'] if isinstance(corpus, dict) else corpus
    ids = sys.argv[1].split(',') if len(sys.argv) > 1 else [m['id'] for m in models]
    print(f"{'model':22s} {'cairn t1':>9s} {'t2':>8s} {'ORT32 t1':>9s} {'t2':>8s} "
          f"{'c/ORT t1':>8s} {'c/ORT t2':>8s} {'ORT8 t2':>8s}  (ms)")
    for mid in ids:
        onnx = f'{CACHE}/{mid}.onnx'
        so = ort.SessionOptions()
        so.log_severity_level = 3
        s = ort.InferenceSession(onnx, so, providers=['CPUExecutionProvider'])
        d = f'{CACHE}/{mid}/inputs/sample_000'
        feeds, args = {}, []
        for i in s.get_inputs():
            f = f"{d}/{i.name.replace('/', '_')}.npy"
            feeds[i.name] = np.load(f)
            args += ['--input', f'{i.name}={f}']
        best = {}
        for _ in range(REPS):
            for key, fn in [('c1', lambda: cairn_ms(mid, args, 1)),
                            ('c2', lambda: cairn_ms(mid, args, 2)),
                            ('o1', lambda: ort_ms(onnx, feeds, 1)),
                            ('o2', lambda: ort_ms(onnx, feeds, 2)),
                            ('q2', lambda: ort_ms(f'{ROOT}/target/corpus/{mid}/qdq.onnx', feeds, 2))]:
                try:
                    v = fn()
                except Exception:
                    v = float('nan')
                best[key] = min(best.get(key, float('inf')), v)
        b = best
        print(f"{mid:22s} {b['c1']:9.2f} {b['c2']:8.2f} {b['o1']:9.2f} {b['o2']:8.2f} "
              f"{b['c1'] / b['o1']:8.2f} {b['c2'] / b['o2']:8.2f} {b['q2']:8.2f}", flush=True)


if __name__ == '__main__':
    main()
