"""An OpenAI-compatible transcription server (`max-whisper serve`, extra `serve`).

POST /v1/audio/transcriptions and /v1/audio/translations take the multipart form of OpenAI's audio
API, so the official `openai` client works with `base_url` pointed here; GET /v1/models, GET /health.
WebSocket /v1/audio/stream transcribes live audio (`streaming`): PCM chunks in, committed and tentative
text out as JSON events (`stream_session` says the protocol).

One engine serves every request. Each request runs the long-form loop (`transcribe`) in its own
worker thread; the loop's window decodes go to a `batching.WindowBatcher`, the only thread that touches
the engine, which decodes the windows waiting from all requests together (same decoding options: one
batch, each window with its own request's previous text). At most `max_queue` requests are admitted
at a time; beyond that the answer is 503 with Retry-After, so memory stays bounded.
"""


import asyncio
import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, decode_audio, from_pcm16
from .batching import BatchedModel, WindowBatcher, one_blas_thread
from .errors import WhisperError, first_line
from .outputs import WRITERS, SubtitleOptions
from .engine import WhisperModel
from .tokenizer import LANGUAGES
from .streaming import StreamingOptions, StreamingTranscriber, StreamUpdate
from .transcribe import SILENCE_THRESHOLD_DB, TranscribeOptions, transcribe_with

OPENAI_MODEL_ALIAS = "whisper-1"  # what clients written for OpenAI send
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass(frozen=True)
class ServerOptions:
    model_name: str = "tiny.en"
    max_upload_mb: float = 25.0  # OpenAI's limit
    max_batch: int = 8  # windows decoded together
    max_queue: int = 64  # requests admitted at once (being transcribed or waiting)
    linger_s: float = 0.003  # how long a batch waits for windows of other running requests
    silence_threshold_db: float | None = SILENCE_THRESHOLD_DB  # see transcribe(); None decodes every window
    max_streams: int = 64  # live WebSocket streams at once


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def _error_body(status: int, message: str, param=None, code=None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(model: WhisperModel, options: ServerOptions = ServerOptions()):
    """The FastAPI application serving `model` (a loaded max-backend WhisperModel)."""
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError:
        raise WhisperError("max-whisper serve needs FastAPI and uvicorn: pip install 'max-whisper[serve]'") from None

    batcher = WindowBatcher(model, options.max_batch, options.linger_s)
    engine = BatchedModel(model, batcher)
    workers = ThreadPoolExecutor(max_workers=options.max_queue, thread_name_prefix="transcribe")
    stream_workers = ThreadPoolExecutor(max_workers=options.max_streams, thread_name_prefix="stream")
    admitted = {"n": 0}
    streams = {"n": 0}
    max_bytes = int(options.max_upload_mb * 2**20)
    model_names = (options.model_name, OPENAI_MODEL_ALIAS)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        with one_blas_thread():  # requests compute their log-mels in threads of their own
            yield
        batcher.stop()
        workers.shutdown(wait=False, cancel_futures=True)
        stream_workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="max-whisper", version="0.1.0", lifespan=lifespan)
    app.state.batcher, app.state.options = batcher, options

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return JSONResponse(_error_body(e.status, e.message, e.param, e.code), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return JSONResponse(_error_body(e.status_code, f"{request.method} {request.url.path}: {e.detail}"),
                            status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e: RequestValidationError):
        return JSONResponse(_error_body(400, str(e)), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request, e: Exception):
        return JSONResponse(_error_body(500, f"internal error: {first_line(e)}"), status_code=500)

    app.add_middleware(UploadLimit, max_bytes=max_bytes + 2**16, limit_mb=options.max_upload_mb)  # room for the form's other fields

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": options.model_name, "device": model.device,
                "requests_in_flight": admitted["n"], "max_queue": options.max_queue, "streams": streams["n"],
                "batches": batcher.batches, "windows": batcher.windows}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "max-whisper"}
                                           for m in model_names]}

    @app.get("/v1/models/{name}")
    async def model_info(name: str):
        if name not in model_names:
            raise ApiError(404, f"model '{name}' is not served here (serving {', '.join(model_names)})",
                           "model", "model_not_found")
        return {"id": name, "object": "model", "created": 0, "owned_by": "max-whisper"}

    async def handle(request: Request, task: str):
        form = await _read_form(request)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "missing the audio 'file' field (multipart/form-data)", "file")
        name = form.get("model")
        if not name:
            raise ApiError(400, "missing the 'model' field", "model")
        if name not in model_names:
            raise ApiError(404, f"model '{name}' is not served here (serving {', '.join(model_names)})",
                           "model", "model_not_found")
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format '{response_format}' is not one of {', '.join(RESPONSE_FORMATS)}",
                           "response_format")
        granularities = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
        if granularities - {"segment", "word"}:
            raise ApiError(400, f"timestamp_granularities must be segment and/or word, got {sorted(granularities)}",
                           "timestamp_granularities[]")
        if granularities and response_format != "verbose_json":
            raise ApiError(400, "timestamp_granularities need response_format verbose_json", "timestamp_granularities[]")
        kwargs = {"task": task, "initial_prompt": form.get("prompt") or None,
                  "temperature": _temperature(form.get("temperature")),
                  "language": form.get("language") if task == "transcribe" else None,
                  "word_timestamps": "word" in granularities or None,
                  "vad_filter": _flag(form.get("vad_filter"), "vad_filter"),
                  "vad_parameters": _vad_parameters(form.get("vad_parameters"))}
        try:
            transcribe_options = TranscribeOptions.from_kwargs(
                silence_threshold_db=options.silence_threshold_db, **{k: v for k, v in kwargs.items() if v is not None})
            model.tokenizer(transcribe_options.decoding.language, task)  # a language the model has
        except WhisperError as e:
            param = "vad_parameters" if "vad" in str(e) else "language" if kwargs["language"] else None
            raise ApiError(400, str(e), param) from None
        filename = upload.filename or "upload"
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ApiError(413, f"{filename}: over the {options.max_upload_mb:g} MB upload limit", "file",
                           "file_too_large")
        if not data:
            raise ApiError(400, f"{filename}: empty file (0 bytes)", "file")

        if admitted["n"] >= options.max_queue:
            raise ApiError(503, f"server busy: {admitted['n']} requests in progress; retry shortly",
                           code="server_busy", headers={"Retry-After": "1"})
        admitted["n"] += 1
        try:
            result, duration = await asyncio.get_running_loop().run_in_executor(
                workers, _transcribe_upload, engine, batcher, data, filename, transcribe_options)
        except WhisperError as e:
            raise ApiError(400, str(e), "file") from None
        finally:
            admitted["n"] -= 1
        return _respond(result, response_format, task, duration, granularities or {"segment"})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await handle(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await handle(request, "translate")

    @app.websocket("/v1/audio/stream")
    async def audio_stream(ws: WebSocket):
        await ws.accept()
        try:
            session = _stream_setup(dict(ws.query_params), model, model_names, options)
        except (ApiError, WhisperError) as e:
            await ws.send_json({"type": "error", "message": str(e)})
            await ws.close(code=1008)  # policy violation: the parameters
            return
        if streams["n"] >= options.max_streams:
            await ws.send_json({"type": "error", "message": f"server busy: {streams['n']} streams open; retry shortly"})
            await ws.close(code=1013)  # try again later
            return
        streams["n"] += 1
        try:
            transcriber = StreamingTranscriber(engine, session.transcribe, session.streaming)
            await stream_session(ws, transcriber, session.sample_format,
                                 lambda work: asyncio.get_running_loop().run_in_executor(stream_workers,
                                                                                         batcher.counted, work))
        finally:
            streams["n"] -= 1

    return app


@dataclass(frozen=True)
class StreamSetup:
    transcribe: TranscribeOptions
    streaming: StreamingOptions
    sample_format: str


SAMPLE_FORMATS: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # 16 kHz mono PCM a stream may send


def _stream_setup(params: dict, model: WhisperModel, model_names: tuple[str, ...], options: ServerOptions) -> StreamSetup:
    """A stream's options from its URL's query: model, language, format (s16le, f32le), min_chunk (seconds),
    agreement (decodes), vad_filter, vad_parameters."""
    unknown = set(params) - {"model", "language", "format", "min_chunk", "agreement", "vad_filter", "vad_parameters"}
    if unknown:
        raise ApiError(400, f"unknown stream parameter(s): {', '.join(sorted(unknown))}")
    if params.get("model") and params["model"] not in model_names:
        raise ApiError(404, f"model '{params['model']}' is not served here (serving {', '.join(model_names)})")
    sample_format = params.get("format") or "s16le"
    if sample_format not in SAMPLE_FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(SAMPLE_FORMATS)}, got '{sample_format}'")
    try:
        min_chunk = float(params["min_chunk"]) if params.get("min_chunk") else None
    except ValueError:
        raise ApiError(400, f"min_chunk must be a number of seconds, got '{params['min_chunk']}'") from None
    try:
        agreement = int(params["agreement"]) if params.get("agreement") else None
    except ValueError:
        raise ApiError(400, f"agreement must be a whole number of decodes, got '{params['agreement']}'") from None
    kwargs = {"language": params.get("language") or None, "vad_filter": _flag(params.get("vad_filter"), "vad_filter"),
              "vad_parameters": _vad_parameters(params.get("vad_parameters"))}
    transcribe = TranscribeOptions.from_kwargs(silence_threshold_db=options.silence_threshold_db, temperature=0.0,
                                               **{k: v for k, v in kwargs.items() if v is not None})
    model.tokenizer(transcribe.decoding.language, "transcribe")  # a language the model has
    return StreamSetup(transcribe, StreamingOptions.for_device(not model.session.on_host, min_chunk, agreement),
                       sample_format)


def pcm_samples(data: bytes, sample_format: str) -> np.ndarray:
    """A binary chunk as float32 samples; WhisperError when it is not PCM of that format."""
    dtype = SAMPLE_FORMATS[sample_format]
    if not data or len(data) % dtype.itemsize:
        raise WhisperError(f"a chunk of {len(data)} bytes is not {sample_format} PCM (a whole number of "
                           f"{dtype.itemsize}-byte samples, at least one)")
    samples = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "i":
        return from_pcm16(samples)
    if not np.all(np.abs(samples) <= 1.0):  # NaN fails too
        raise WhisperError(f"a chunk of {samples.size} f32le samples is not PCM: values beyond [-1, 1] or not numbers")
    return samples.astype(np.float32)


def _update_events(update: StreamUpdate, final: bool = False) -> list[dict]:
    events = []
    if update.committed:
        events.append({"type": "committed", "text": update.committed_text, "words": update.committed})
    if not final:
        events.append({"type": "tentative", "text": update.tentative_text, "words": update.tentative})
    return events


async def stream_session(ws, transcriber: StreamingTranscriber, sample_format: str, in_thread) -> None:
    """One live stream over an accepted WebSocket. The client sends binary messages of 16 kHz mono PCM in
    `sample_format` and, at its end, the text message {"type": "end"}. The server decodes whenever
    `min_chunk_s` of new audio has arrived (one decode at a time) and sends after each decode
    {"type": "committed", "text", "words"} when words were committed (final) and {"type": "tentative",
    "text", "words"} (the rest of the hypothesis, replacing the previous one); after "end", the last
    committed words and {"type": "done", "text", "segments", "language", "duration"}, then closes. A message
    that is not PCM gets {"type": "error", "message"} and the stream goes on; a failing decode gets an error
    event and the stream is closed (1011). `in_thread(fn)` runs an engine call off the event loop."""
    from starlette.websockets import WebSocketDisconnect

    sending = asyncio.Lock()
    min_chunk = transcriber.streaming.min_chunk_s

    async def send(event: dict) -> None:
        async with sending:
            await ws.send_json(event)

    async def decode_while_pending() -> None:
        while transcriber.pending_s >= min_chunk:
            for event in _update_events(await in_thread(transcriber.update)):
                await send(event)

    decoding: asyncio.Task | None = None
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                try:
                    transcriber.feed(pcm_samples(message["bytes"], sample_format))
                except WhisperError as e:
                    await send({"type": "error", "message": str(e)})
            elif _is_end(message.get("text")):
                if decoding is not None:
                    await decoding
                for event in _update_events(await in_thread(transcriber.finish), final=True):
                    await send(event)
                result = transcriber.result()
                await send({"type": "done", "text": result["text"], "language": result["language"],
                            "duration": round(transcriber.fed_s, 3),
                            "segments": [{k: s[k] for k in ("id", "start", "end", "text")} for s in result["segments"]]})
                await ws.close()
                return
            else:
                await send({"type": "error", "message": "expected binary PCM chunks and, at the end, the text "
                                                        "message {\"type\": \"end\"}"})
            if decoding is not None and decoding.done():
                decoding.result()  # a failed decode ends the stream here
                decoding = None
            if decoding is None and transcriber.pending_s >= min_chunk:
                decoding = asyncio.create_task(decode_while_pending())
    except WebSocketDisconnect:
        return
    except WhisperError as e:  # the engine failed: say so and end the stream
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await send({"type": "error", "message": f"transcription failed: {e}"})
            await ws.close(code=1011)
    finally:
        if decoding is not None:
            decoding.cancel()  # a disconnected stream's decode in progress is dropped


def _is_end(text: str | None) -> bool:
    if text is None:
        return False
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"


class UploadLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 as soon as that many bytes have
    arrived, from its Content-Length when it has one, else (chunked) while it is being read, so that no
    oversized upload is ever read whole."""

    def __init__(self, app, max_bytes: int, limit_mb: float):
        self.app, self.max_bytes, self.limit_mb = app, max_bytes, limit_mb

    def _too_large(self, size: str) -> ApiError:
        return ApiError(413, f"upload of {size} bytes is over the {self.limit_mb:g} MB limit", "file", "file_too_large",
                        headers={"Connection": "close"})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            from fastapi.responses import JSONResponse

            e = self._too_large(length.decode())
            return await JSONResponse(_error_body(413, e.message, e.param, e.code), 413, e.headers)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"more than {self.max_bytes}")  # answered by the app's ApiError handler
            return message

        await self.app(scope, limited_receive, send)


async def _read_form(request):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "expected a multipart/form-data body with an audio 'file' field")
    try:
        return await request.form(max_files=1)
    except ApiError:
        raise
    except Exception as e:  # noqa: BLE001  (a malformed body is the client's problem)
        raise ApiError(400, f"malformed multipart body: {first_line(e)}") from None


def _flag(text: str | None, name: str) -> bool | None:
    """A boolean form field (faster-whisper servers' vad_filter): true/false, 1/0; None when not given."""
    if text in (None, ""):
        return None
    if text.lower() not in ("true", "false", "1", "0"):
        raise ApiError(400, f"{name} must be true or false, got '{text}'", name)
    return text.lower() in ("true", "1")


def _vad_parameters(text: str | None) -> dict | None:
    """vad_parameters: a JSON object of faster-whisper's VAD option names (TranscribeOptions checks them)."""
    if text in (None, ""):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ApiError(400, f"vad_parameters must be a JSON object, got '{text}'", "vad_parameters")
    return value


def _temperature(text: str | None) -> float | tuple[float, ...] | None:
    """OpenAI's temperature: 0 (default) lets the model raise it on failure, as our CLI's default does."""
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"temperature must be a number, got '{text}'", "temperature") from None
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"temperature must be between 0 and 1, got {value}", "temperature")
    return None if value == 0 else value


def _transcribe_upload(engine: BatchedModel, batcher: WindowBatcher, data: bytes, filename: str,
                       options: TranscribeOptions) -> tuple[dict, float]:
    audio = decode_audio(io.BytesIO(data), filename)
    with batcher.running():
        return transcribe_with(engine, audio, options), len(audio) / SAMPLE_RATE


def _respond(result: dict, response_format: str, task: str, duration: float, granularities: set[str]):
    from fastapi.responses import JSONResponse, PlainTextResponse

    text = result["text"].strip()
    if response_format == "json":
        return JSONResponse({"text": text})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format in ("srt", "vtt"):
        out = io.StringIO()
        WRITERS[response_format](result, out, SubtitleOptions())
        return PlainTextResponse(out.getvalue(), media_type="text/vtt" if response_format == "vtt" else "text/plain")
    body = {"task": "translate" if task == "translate" else "transcribe",
            "language": LANGUAGES.get(result["language"], result["language"]), "duration": duration, "text": text}
    if "segment" in granularities:
        body["segments"] = [{"id": s["id"], "seek": s["seek"], "start": s["start"], "end": s["end"], "text": s["text"],
                             "tokens": s["tokens"], "temperature": s["temperature"], "avg_logprob": s["avg_logprob"],
                             "compression_ratio": s["compression_ratio"], "no_speech_prob": s["no_speech_prob"]}
                            for s in result["segments"]]
    if "word" in granularities:  # OpenAI's words: the word without its leading space, start and end
        body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
                         for s in result["segments"] for w in s.get("words", [])]
    return JSONResponse(body)


def serve(model, options: ServerOptions, host: str, port: int) -> None:
    """Run the server until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise WhisperError("max-whisper serve needs FastAPI and uvicorn: pip install 'max-whisper[serve]'") from None
    uvicorn.run(create_app(model, options), host=host, port=port, log_level="info")
