"""One lecture transcription and the lecture's log-mel pass one, timed with the max_whisper found in SRC_DIR
(for alternating A/B runs of two versions of the code in separate processes).

    python benchmarks/logmel_ab.py SRC_DIR SPEECH_DIR cpu|gpu

Prints the median and min of 5 transcriptions after a warm-up and the median pass-one time in ms.
"""
import sys, time, statistics
sys.path.insert(0, sys.argv[1])  # the src folder to time
import max_whisper as mw
from max_whisper.audio import LogMelFeatures, N_SAMPLES
m = mw.load_model("tiny.en", device=sys.argv[3])
a = mw.load_audio(sys.argv[2] + "/lecture.flac")
m.transcribe(a, temperature=0.0)
ws, ms = [], []
for _ in range(5):
    t = time.perf_counter(); m.transcribe(a, temperature=0.0); ws.append(time.perf_counter() - t)
    t = time.perf_counter(); LogMelFeatures(a, 80, padding=N_SAMPLES)._pass_one; ms.append(time.perf_counter() - t)
print(mw.__file__.split("/")[-3], "lecture median", round(statistics.median(ws), 4), "min", round(min(ws), 4), "pass one ms", round(1000 * statistics.median(ms), 1))
