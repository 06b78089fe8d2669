"""`noop`: a diagnostic task for health checks, tests and benchmarks.

Params: `seconds` (sleep in small cancellable steps, reporting progress), `fail` (a message: fail
permanently), `transient` (true: raise a transient error, so the task is retried with backoff),
`fatal` (true: behave like a process-poisoning fault such as a CUDA error: the task goes back to the
queue with the attempt counted and the worker exits with code 3, so a supervisor restart can be checked).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from source.errors import FatalWorkerError, InvalidInput, TransientError
from source.handler_registry import register
from source.task_context import HandlerResult, TaskContext


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    seconds: float = Field(0.0, ge=0, le=86400)
    fail: str | None = None
    transient: bool = False
    fatal: bool = False


@register("noop", params_model=NoopParams)
def handle_noop(params: NoopParams, ctx: TaskContext) -> HandlerResult:
    if params.fail:
        raise InvalidInput(params.fail)
    if params.fatal:
        raise FatalWorkerError("fatal fault requested (noop fatal=true)")
    if params.transient:
        raise TransientError(f"transient failure requested (attempt {ctx.attempt})")
    step = 0.05
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < params.seconds:
        ctx.progress(elapsed / params.seconds, f"slept {elapsed:.1f} of {params.seconds:g} s")
        time.sleep(min(step, params.seconds - elapsed))
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=None, result={"slept_s": round(time.monotonic() - started, 3),
                                                      "attempt": ctx.attempt})
