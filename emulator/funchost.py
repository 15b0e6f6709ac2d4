"""A stand-in for the Azure Functions host + Python worker: indexes a FunctionApp, serves the Event Grid webhook, fires timers.

It reproduces the contract the app meets in Azure, not the emulator: the host's Event Grid endpoint
(`/runtime/webhooks/eventgrid?functionName=NAME`, handshakes, one invocation per event, 202 / 500), the worker's indexing
checks (parameters vs bindings, `check_input_type_annotation`) and its decoding (the azure-functions converters fed the
event JSON as `json` typed data). The app sees only its process environment, as in Azure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import typing
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from aiohttp import web

# Pinned, not public: azure-functions 1.26 exports no TraceContext/RetryContext, yet func.Context's abstract trace_context
# and retry_context must return them; they live only in the private `_abc` (the Python worker imports them from there too).
# azure-functions is pinned in requirements.txt; move to a public name when one exists.
from azure.functions import _abc as azf_abc
from azure.functions.meta import Datum  # `meta` is a public module; converters decode Datum values

log = logging.getLogger("emulator.funchost")

EVENTGRID_TRIGGER = "eventGridTrigger"
TIMER_TRIGGER = "timerTrigger"
WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
QUEUE_TRIGGER = "queueTrigger"
SUPPORTED_TRIGGERS = {EVENTGRID_TRIGGER, TIMER_TRIGGER, QUEUE_TRIGGER}
_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("funchost_invocation", default=None)


class FunctionLoadError(RuntimeError):
    """The app cannot be indexed, for the reason the Python worker would give."""

    def __init__(self, function_name: str, msg: str) -> None:
        super().__init__(f"cannot load the {function_name} function: {msg}")


DEFAULT_FUNCTION_TIMEOUT = 1800.0  # seconds: the Premium/Dedicated default when host.json sets none


def _timespan(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}" + (f".{int((seconds % 1) * 1000):03d}"
                                                                              if seconds % 1 else "")


def read_function_timeout(host_json: Path) -> float:
    """host.json's functionTimeout ("hh:mm:ss", or "-1" for unbounded) in seconds; the default when absent."""
    try:
        raw = json.loads(host_json.read_text()).get("functionTimeout")
    except (OSError, ValueError):
        return DEFAULT_FUNCTION_TIMEOUT
    if raw in (None, ""):
        return DEFAULT_FUNCTION_TIMEOUT
    if str(raw).strip() == "-1":
        return float("inf")
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?", str(raw).strip())
    if not match:
        raise ValueError(f"{host_json}: functionTimeout {raw!r} is not a TimeSpan like 00:10:00")
    days, hours, minutes, secs, frac = match.groups()
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(secs) + float(f"0.{frac or 0}"))


class HostIndexingError(FunctionLoadError):
    """The host (not the worker) refuses a function: unresolvable %setting% expressions, an invalid timer schedule."""

    def __init__(self, function_name: str, msg: str) -> None:
        RuntimeError.__init__(self, f"Error indexing method 'Functions.{function_name}'. {msg}")


# ------------------------------------------------------------------------------------------------ host-side checks

_SETTING_EXPR = re.compile(r"%([^%]+)%")
_CRON_FIELDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # NCRONTAB: second minute hour day month day-of-week
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_NAMES = {4: {m: i + 1 for i, m in enumerate(_MONTHS)}, 5: {d: i for i, d in enumerate(_DAYS)}}
_TIMESPAN = re.compile(r"^(\d+\.)?\d{1,2}:\d{2}(:\d{2})?$")


def resolve_setting_expressions(function_name: str, value: str, env: typing.Mapping[str, str]) -> str:
    """Replace `%NAME%` with the app setting, as the host does for binding properties; a missing setting is an error."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise HostIndexingError(function_name, f"'%{name}%' does not resolve to a value.")
        return env[name]

    return _SETTING_EXPR.sub(lookup, value)


def _cron_value(text: str, index: int) -> int | None:
    names = _CRON_NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    return int(text) if text.isdigit() else None


def check_schedule(expression: str) -> bool:
    """A six-field NCRONTAB expression (seconds first) or a TimeSpan, as the timer trigger accepts."""
    if _TIMESPAN.match(expression.strip()):
        return True
    fields = expression.split()
    if len(fields) != 6:
        return False
    for index, field_text in enumerate(fields):
        lo, hi = _CRON_FIELDS[index]
        for part in field_text.split(","):
            base, slash, step = part.partition("/")
            if slash and not (step.isdigit() and int(step) > 0):
                return False
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2:
                return False
            values = [_cron_value(b, index) for b in bounds]
            if any(v is None or not lo <= v <= hi for v in values):
                return False
            if len(values) == 2 and values[0] > values[1]:  # type: ignore[operator]
                return False
    return True


# ------------------------------------------------------------------------------------------------ indexed functions


@dataclass
class Param:
    name: str
    binding_type: str  # the converter's binding name, or "generic" for str/bytes annotations (as the worker does)
    pytype: Any
    direction: str  # in | out


@dataclass
class IndexedFunction:
    name: str
    func: Any
    trigger_type: str
    trigger_param: str
    params: dict[str, Param]
    requires_context: bool
    is_async: bool
    directory: str
    trigger_settings: dict[str, Any] = field(default_factory=dict)  # the trigger's function.json entry, %settings% resolved


@dataclass
class Invocation:
    """One function execution: what it was given, how it ended, what it logged."""

    id: str
    function: str
    trigger: Any  # the decoded trigger value (func.EventGridEvent, func.CloudEvent, TimerRequest, str)
    payload: str  # the JSON the host handed the worker
    started: float
    ended: float = 0.0
    succeeded: bool = False
    timed_out: bool = False  # exceeded functionTimeout: reported failed (the real host recycles the worker)
    exception: BaseException | None = None
    result: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


class _Out(func.Out):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(azf_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class _Context(func.Context):
    _tls = threading.local()

    def __init__(self, invocation_id: str, fn: IndexedFunction) -> None:
        self._id, self._fn = invocation_id, fn
        self._trace, self._retry = _TraceContext(), _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._fn.name

    @property
    def function_directory(self) -> str:
        return self._fn.directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry


def find_function_app(module: ModuleType) -> func.FunctionRegister:
    """The module's one top-level FunctionApp, as the worker finds it."""
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if not apps:
        raise ValueError(f"Could not find top level function app instances in {module.__name__}.py.")
    if len({id(a) for a in apps}) > 1:
        raise ValueError(f"More than one top-level function app instances found in {module.__name__}.py.")
    return apps[0]


def index_app(app: func.FunctionRegister, directory: str = ".",
              env: typing.Mapping[str, str] | None = None) -> dict[str, IndexedFunction]:
    """`app.get_functions()` (once), the host's binding checks and the worker's per-function checks.

    Raises FunctionLoadError (worker) or HostIndexingError (host) with the message they would log.
    """
    registry = func.get_binding_registry()
    env = os.environ if env is None else env
    indexed: dict[str, IndexedFunction] = {}
    for function in app.get_functions():
        name = function.get_function_name()
        user_func = function.get_user_function()
        trigger = function.get_trigger()
        if trigger is None:
            raise FunctionLoadError(name, "the function has no trigger")
        if trigger.type not in SUPPORTED_TRIGGERS:
            raise FunctionLoadError(name, f"trigger {trigger.type!r} is not served by this host stand-in "
                                    f"(supported: {sorted(SUPPORTED_TRIGGERS)})")
        settings = {k: resolve_setting_expressions(name, v, env) if isinstance(v, str) else v
                    for k, v in trigger.get_dict_repr().items()}
        if trigger.type == TIMER_TRIGGER and not check_schedule(str(settings.get("schedule", ""))):
            raise HostIndexingError(name, f"The schedule expression '{settings.get('schedule')}' was not recognized as a valid "
                                    "cron expression or timespan string.")
        sig = inspect.signature(user_func)
        params = dict(sig.parameters)
        annotations = typing.get_type_hints(user_func)
        bindings = {b.name: b for b in function.get_bindings() if b.name != "$return"}
        requires_context = False
        if "context" in params and "context" not in bindings:
            requires_context = True
            params.pop("context")
        if set(params) - set(bindings):
            raise FunctionLoadError(name, f"the following parameters are declared in Python but not in the function "
                                    f"definition: {set(params) - set(bindings)!r}")
        if set(bindings) - set(params):
            raise FunctionLoadError(name, f"the following parameters are declared in the function definition but not in "
                                    f"Python: {set(bindings) - set(params)!r}")
        out: dict[str, Param] = {}
        for pname in params:
            binding = bindings[pname]
            is_out = binding.direction == 1  # BindingDirection.OUT
            anno = annotations.get(pname)
            pytype = anno
            if is_out and anno is not None:
                args = typing.get_args(anno)
                pytype = args[0] if args else anno
            bind_type = "generic" if anno in (str, bytes) else binding.type
            if anno is not None and not is_out:
                if bind_type == "generic":  # the worker's GenericBinding takes str and bytes
                    ok = True
                else:
                    converter = registry.get(bind_type)
                    ok = converter is not None and converter.check_input_type_annotation(pytype)
                if not ok:
                    raise FunctionLoadError(name, f'type of {pname} binding in function.json "{binding.type}" does not '
                                            f'match its Python annotation "{getattr(pytype, "__name__", pytype)}"')
            if not is_out and pname != trigger.name:
                raise FunctionLoadError(name, f"input binding {binding.type!r} ({pname}) is not served by this host stand-in")
            out[pname] = Param(pname, bind_type, pytype, "out" if is_out else "in")
        indexed[name] = IndexedFunction(
            name=name, func=user_func, trigger_type=trigger.type, trigger_param=trigger.name, params=out,
            requires_context=requires_context, is_async=inspect.iscoroutinefunction(user_func), directory=directory,
            trigger_settings=settings,
        )
    return indexed


# ------------------------------------------------------------------------------------------------ log capture


class _CaptureHandler(logging.Handler):
    """Attributes each log record to the invocation running in the emitting thread (as the worker's invocation id does)."""

    def emit(self, record: logging.LogRecord) -> None:
        inv = _current.get()
        if inv is not None:
            inv.records.append(record)


# ------------------------------------------------------------------------------------------------ the host


class FunctionsHost:
    """Serve a function app's Event Grid webhook on 127.0.0.1 and run its timers on demand.

    `FunctionsHost(app_module="function_app")` imports the module afresh (as a new host process would), finds its
    FunctionApp and indexes it once. Use as a context manager, or start()/stop().
    """

    def __init__(self, app_module: str = "function_app", port: int = 0, *, app: func.FunctionRegister | None = None,
                 max_workers: int | None = None, system_key: str | None = None, log_level: int = logging.INFO,
                 function_timeout: float | None = None) -> None:
        """`function_timeout` (seconds) overrides host.json's functionTimeout (next to the app module; default 30 min)."""
        self.app_module = app_module
        self._function_timeout_override = function_timeout
        self.function_timeout = function_timeout if function_timeout is not None else DEFAULT_FUNCTION_TIMEOUT
        self._app = app
        self.port = port
        self.system_key = system_key  # when set, the webhook requires ?code=<key> (the eventgrid_extension system key)
        self.log_level = log_level
        self.max_workers = max_workers
        self.functions: dict[str, IndexedFunction] = {}
        self.invocations: list[Invocation] = []
        self.requests: list[dict[str, Any]] = []  # every webhook request: method, function, event type, status
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._handler = _CaptureHandler(level=logging.DEBUG)
        self._saved_level: int | None = None
        self._timer_last: dict[str, str] = {}
        self.startup: list[Future[Invocation]] = []  # run_on_startup timer runs fired by start()
        self.queue_listeners: list[Any] = []  # emulator.queuetrigger.QueueListener per queue-triggered function

    # -------------------------------------------------------------- lifecycle
    def load(self) -> dict[str, IndexedFunction]:
        if self._app is None:
            sys.modules.pop(self.app_module, None)  # a fresh import per host, as a new worker process does
            module = importlib.import_module(self.app_module)
            self._app = find_function_app(module)
            directory = str(Path(getattr(module, "__file__", None) or "./x").resolve().parent)
        else:
            directory = "."
        if self._function_timeout_override is None:
            self.function_timeout = read_function_timeout(Path(directory) / "host.json")
        self.functions = index_app(self._app, directory)
        return self.functions

    def start(self) -> FunctionsHost:
        if not self.functions:
            self.load()
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="funchost-worker")
        root = logging.getLogger()
        root.addHandler(self._handler)
        if root.level > self.log_level or root.level == logging.NOTSET:
            self._saved_level = root.level
            root.setLevel(self.log_level)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="funchost-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), self._loop).result(30)
        log.info("functions host serving %s with %s", self.url, sorted(self.functions))
        for name, fn in self.functions.items():
            if fn.trigger_type == TIMER_TRIGGER and fn.trigger_settings.get("runOnStartup"):
                self.startup.append(self._pool.submit(self.fire_timer, name))  # as the host does for run_on_startup timers
        from .queuetrigger import start_listeners

        self.queue_listeners = start_listeners(self)
        return self

    def wait_queues_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queue trigger has nothing in flight and nothing visible to dequeue; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(listener.idle() for listener in self.queue_listeners):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for listener in self.queue_listeners:
            listener.stop()
        self.queue_listeners = []
        if self._loop is not None and self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)  # type: ignore[union-attr]
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
        self._loop = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._saved_level is not None:
            root.setLevel(self._saved_level)
            self._saved_level = None

    def __enter__(self) -> FunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, function_name: str) -> str:
        """The Event Grid subscription endpoint for a function, as `az eventgrid event-subscription create` would use."""
        code = f"&code={self.system_key}" if self.system_key else ""
        return f"{self.url}{WEBHOOK_PATH}?functionName={function_name}{code}"

    # -------------------------------------------------------------- invoking
    def _new_invocation(self, fn: IndexedFunction, trigger_value: Any, payload: str) -> Invocation:
        return Invocation(id=str(uuid.uuid4()), function=fn.name, trigger=trigger_value, payload=payload, started=time.time())

    def _invoke_sync(self, fn: IndexedFunction, trigger_value: Any, payload: str, inv: Invocation | None = None) -> Invocation:
        inv = inv or self._new_invocation(fn, trigger_value, payload)
        inv.started = time.time()
        token = _current.set(inv)
        try:
            kwargs: dict[str, Any] = {}
            outs: dict[str, _Out] = {}
            for p in fn.params.values():
                if p.direction == "out":
                    outs[p.name] = kwargs[p.name] = _Out()
                else:
                    kwargs[p.name] = trigger_value
            if fn.requires_context:
                kwargs["context"] = _Context(inv.id, fn)
            if fn.is_async:
                inv.result = self._run_async(fn.func(**kwargs))
            else:
                inv.result = fn.func(**kwargs)
            inv.outputs = {k: o.get() for k, o in outs.items()}
            inv.succeeded = not inv.timed_out
        except Exception as exc:  # the worker reports any exception as a failed invocation
            inv.exception = exc
            logging.getLogger("azure_functions_worker").error("Exception while executing function: Functions.%s", fn.name,
                                                              exc_info=True)
        finally:
            _current.reset(token)
            inv.ended = time.time()
            with self._lock:
                self.invocations.append(inv)
        return inv

    def _run_async(self, coro: Any) -> Any:
        """Async functions share one event loop, as in the worker (loop-bound clients cached by the app keep working)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return asyncio.run(coro)
        # call_soon_threadsafe copies this thread's context, so the invocation's log capture follows the coroutine
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _decode(self, fn: IndexedFunction, payload: str) -> Any:
        param = fn.params[fn.trigger_param]
        converter = func.get_binding_registry().get(param.binding_type)
        datum = Datum(type="json", value=payload)
        if param.binding_type == "generic":
            return payload if param.pytype is not bytes else payload.encode()
        return converter.decode(datum, trigger_metadata={})

    def invoke_event(self, function_name: str, event: dict[str, Any]) -> Invocation:
        """Run an Event Grid function once for one event JSON, in the calling thread (no HTTP)."""
        fn = self.functions[function_name]
        payload = json.dumps(event, indent=2)
        return self._invoke_sync(fn, self._decode(fn, payload), payload)

    def fire_timer(self, name: str, past_due: bool = False) -> Invocation:
        """Run a timer function once with the payload the host sends (decoded to azure.functions.timer.TimerRequest)."""
        fn = self.functions.get(name)
        if fn is None or fn.trigger_type != TIMER_TRIGGER:
            timers = sorted(n for n, f in self.functions.items() if f.trigger_type == TIMER_TRIGGER)
            raise KeyError(f"no timer function {name!r}; timer functions: {timers}")
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        payload = json.dumps({
            "Schedule": {"AdjustForDST": True},
            # the host keeps (and sends) a schedule status only when the timer uses the storage monitor
            "ScheduleStatus": {"Last": self._timer_last.get(name, "0001-01-01T00:00:00"), "Next": now.isoformat(),
                               "LastUpdated": now.isoformat()} if fn.trigger_settings.get("useMonitor", True) else None,
            "IsPastDue": past_due,
        })
        self._timer_last[name] = now.isoformat()
        param = fn.params[fn.trigger_param]
        if param.binding_type == "generic":
            value: Any = payload
        else:
            value = func.get_binding_registry().get(TIMER_TRIGGER).decode(Datum(type="json", value=payload),
                                                                           trigger_metadata={})
        inv = self._new_invocation(fn, value, payload)
        if self._pool is None or threading.current_thread().name.startswith("funchost-worker"):
            return self._invoke_sync(fn, value, payload, inv)
        future = self._pool.submit(self._invoke_sync, fn, value, payload, inv)
        try:
            return future.result(self._wait_limit)
        except FutureTimeout:
            self._timed_out(inv)
            return inv

    @property
    def _wait_limit(self) -> float | None:
        return None if self.function_timeout == float("inf") else self.function_timeout

    def _timed_out(self, inv: Invocation) -> None:
        inv.timed_out, inv.succeeded = True, False
        log.error("Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation.",
                  _timespan(self.function_timeout), inv.function, inv.id)

    def invocations_of(self, function_name: str) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.function == function_name]

    # -------------------------------------------------------------- HTTP
    async def _astart(self) -> None:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", WEBHOOK_PATH, self._webhook)
        app.router.add_get("/admin/host/status", self._status)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"state": "Running", "functions": sorted(self.functions)})

    async def _webhook(self, request: web.Request) -> web.Response:
        resp = await self._handle(request)
        with self._lock:
            self.requests.append({"method": request.method, "function": request.query.get("functionName"),
                                  "event_type": request.headers.get("aeg-event-type"), "status": resp.status})
        return resp

    async def _handle(self, request: web.Request) -> web.Response:
        if self.system_key is not None and request.query.get("code") != self.system_key:
            return web.Response(status=401)
        name = request.query.get("functionName", "")
        fn = self.functions.get(name)
        if fn is None or fn.trigger_type != EVENTGRID_TRIGGER:
            listeners = sorted(n for n, f in self.functions.items() if f.trigger_type == EVENTGRID_TRIGGER)
            return web.Response(status=404, text=f"cannot find function: '{name}', available function names: [{', '.join(listeners)}]")
        if request.method == "OPTIONS":  # CloudEvents abuse protection
            origin = request.headers.get("WebHook-Request-Origin")
            if not origin:
                return web.Response(status=400, text="WebHook-Request-Origin header is required")
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "Allow": "POST"})
        if request.method != "POST":
            return web.Response(status=405)
        event_type = request.headers.get("aeg-event-type", "")
        raw = await request.text()
        if event_type.lower() == "subscriptionvalidation":
            try:
                body = json.loads(raw)
                if isinstance(body, list):
                    code = body[0]["data"]["validationCode"]
                else:
                    data = body["data"]
                    code = (json.loads(data) if isinstance(data, str) else data)["validationCode"]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return web.Response(status=400, text=f"cannot read the validation code: {exc}")
            log.info("perform handshake with eventGrid for function: %s", name)
            return web.json_response({"validationResponse": code})
        if event_type.lower() == "notification":
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return web.Response(status=400, text=f"the request content is not JSON: {exc}")
            if isinstance(body, dict):
                body = [body]
            if not isinstance(body, list):
                return web.Response(status=400, text="The request content should be parseable into a JSON object or array")
            loop = asyncio.get_running_loop()
            jobs: list[tuple[Invocation, asyncio.Future[Invocation]]] = []
            for event in body:
                payload = json.dumps(event, indent=2)  # the host hands each event over as JSON text (JToken.ToString)
                try:
                    value = self._decode(fn, payload)
                except Exception as exc:  # decoding failures fail the invocation, as in the worker
                    return web.Response(status=500, text=f"Exception binding parameter '{fn.trigger_param}': {exc}")
                inv = self._new_invocation(fn, value, payload)
                jobs.append((inv, loop.run_in_executor(self._pool, self._invoke_sync, fn, value, payload, inv)))
            pending: set[Any] = set()
            if jobs:
                _done, pending = await asyncio.wait([job for _, job in jobs], timeout=self._wait_limit)
            for inv, job in jobs:
                if job in pending:
                    self._timed_out(inv)
                    return web.Response(status=500, text=f"Timeout value of {_timespan(self.function_timeout)} exceeded by "
                                        f"function 'Functions.{name}' (Id: '{inv.id}'). Initiating cancellation.")
            for inv, _job in jobs:
                if not inv.succeeded:
                    return web.Response(status=500, text=f"Exception while executing function: Functions.{name}")
            return web.Response(status=202)
        if event_type.lower() == "unsubscribe":
            return web.Response(status=202)
        return web.Response(status=400)


# ------------------------------------------------------------------------------------------------ CLI


def load_local_settings(path: Path, environ: typing.MutableMapping[str, str]) -> list[str]:
    """Core Tools' local.settings.json: `Values` become environment variables; a variable already set wins (its key is
    returned so the caller can warn, as `func start` does)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if raw.get("IsEncrypted"):
        raise ValueError(f"{path} is encrypted (IsEncrypted: true); decrypt it with `func settings decrypt` first")
    values = raw.get("Values") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: Values must be an object of setting names to strings")
    skipped = []
    for key, value in values.items():
        if value is None or not key:
            continue
        if key in environ:
            skipped.append(key)
            continue
        environ[key] = str(value)
    return skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.funchost",
                                     description="Serve a function app's Event Grid webhook locally (Functions host stand-in).")
    parser.add_argument("--app", default="function_app", help="module holding the FunctionApp (default: function_app)")
    parser.add_argument("--port", type=int, default=7071, help="port on 127.0.0.1 (default 7071, 0 for any)")
    parser.add_argument("--settings", default="local.settings.json",
                        help="app settings file, as Core Tools reads it (default: ./local.settings.json if present); "
                             "variables already in the environment win")
    parser.add_argument("--fire-timer", metavar="NAME", help="run this timer function once and exit")
    parser.add_argument("--past-due", action="store_true", help="with --fire-timer: mark the timer past due")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = Path(args.settings)
    if settings.exists() or args.settings != parser.get_default("settings"):
        try:
            for key in load_local_settings(settings, os.environ):
                print(f"warning: {key} from {settings} skipped: already set in the environment", file=sys.stderr)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    host = FunctionsHost(args.app, port=args.port)
    try:
        host.load()
    except (ImportError, ValueError, FunctionLoadError) as exc:
        print(f"error: cannot index {args.app}: {exc}", file=sys.stderr)
        return 2
    if args.fire_timer:
        try:
            inv = host.fire_timer(args.fire_timer, past_due=args.past_due)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        return 0 if inv.succeeded else 1
    with host:
        for name, fn in sorted(host.functions.items()):
            where = (host.webhook_url(name) if fn.trigger_type == EVENTGRID_TRIGGER else
                     f"(queue {fn.trigger_settings.get('queueName')})" if fn.trigger_type == QUEUE_TRIGGER else
                     "(timer: use --fire-timer)")
            print(f"{name}: {fn.trigger_type} {where}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
