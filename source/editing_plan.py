"""Frame arithmetic and validation for video editing: join clips, regenerate a frame range, edit a video.

Pure functions, no I/O: the handlers count the frames of their inputs and hand the counts in. Every video
the editing tasks produce is an ordered list of `Piece`s, each a half-open frame range [start, end) of a
source clip or of a generated bridge, so the final frame count is simply the sum of the piece lengths,
and it is checked against the formula of the task:

join_clips (clips C_0..C_{n-1}, one join per neighbouring pair, plus C_{n-1} -> C_0 when `loop`):
- a join generates one VACE video of G = c_a + g + c_b frames: the c_a context frames before the seam
  (kept by the mask), g new frames (generated), the c_b context frames after it (kept); G is 4n+1 (Wan);
- `replace=False`: the g frames are inserted at the seam: nothing of the clips is lost;
- `replace=True` (the seed's replace mode): the g frames take the place of the last floor(g/2) frames of
  the clip before and the first ceil(g/2) frames of the clip after (the context is taken just outside the
  replaced frames), so the video keeps its length;
- final frames = sum(clips) - sum(replaced) + sum(gaps), exactly.
A looped join runs from the last clip back into the first; its replaced head frames are cut off clip 0.

inpaint_frames (one video of L frames, range [s, e)): a window [s - c_b, e + c_a) is generated with the
frames outside [s, e) kept as context; only [s, e) of it is used, everything else is the input's own.

edit_video (one video, portions [s_k, e_k) to regenerate): keepers are the stretches between portions,
cut as they are; each portion is generated like an inpaint window whose context comes only from its
neighbouring keepers (never from another portion); final frames = L, exactly.

Context is what adapts to the 4n+1 rule (never the range a person asked to regenerate): the window is
rounded down with `wan_frame_count`, dropping context frames (the larger side first); when there is not
enough context to drop, context frames are added up to the next 4n+1 where the video has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from source.errors import InvalidInput
from source.video_geometry import MAX_FRAMES, wan_frame_count

DEFAULT_CONTEXT = 8
DEFAULT_GAP_TARGET = 53   # the seed's default gap (8 + 53 + 8 = 69 = 4*17 + 1)
MAX_CLIPS = 64
MAX_PORTIONS = 64


@dataclass(frozen=True)
class FrameRange:
    """Frames [start, end) of source clip `clip` (an index into the task's list of clips)."""

    clip: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Piece:
    """A part of the final video: frames [start, end) of clip `index` or of bridge (join) `index`."""

    kind: Literal["clip", "bridge"]
    index: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class BridgePlan:
    """One generation: `before` context frames (kept), `gap` generated frames, `after` context (kept)."""

    index: int
    key: str                        # child key: "join-000", ...
    before: FrameRange | None
    gap: int
    after: FrameRange | None
    prompt: str = ""
    seed: int = -1
    replaced: int = 0               # clip frames the gap takes the place of (replace mode)

    @property
    def generation_frames(self) -> int:
        return (self.before.frames if self.before else 0) + self.gap + (self.after.frames if self.after else 0)

    @property
    def gap_start(self) -> int:
        """Where the generated frames start inside the bridge video."""
        return self.before.frames if self.before else 0


@dataclass
class EditPlan:
    bridges: list[BridgePlan]
    pieces: list[Piece]
    expected_frames: int
    adjustments: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bridges": [{"key": b.key, "gap": b.gap, "replaced": b.replaced,
                         "generation_frames": b.generation_frames,
                         "before": _range_dict(b.before), "after": _range_dict(b.after)} for b in self.bridges],
            "pieces": [piece_dict(p) for p in self.pieces],
            "expected_frames": self.expected_frames, "adjustments": self.adjustments,
        }


def _range_dict(r: FrameRange | None) -> dict | None:
    return None if r is None else {"clip": r.clip, "start": r.start, "end": r.end}


def piece_dict(p: Piece) -> dict[str, Any]:
    return {"kind": p.kind, "index": p.index, "start": p.start, "end": p.end}


def piece_from_dict(d: dict[str, Any]) -> Piece:
    try:
        p = Piece(kind=d["kind"], index=int(d["index"]), start=int(d["start"]), end=int(d["end"]))
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"a stitch piece must be {{kind, index, start, end}}, got {str(d)[:80]}") from None
    if p.kind not in ("clip", "bridge") or p.index < 0 or p.start < 0 or p.end <= p.start:
        raise InvalidInput(f"bad stitch piece {piece_dict(p)}: kind clip|bridge, index >= 0, 0 <= start < end")
    return p


def _per_join(value: Any, joins: int, what: str, problems: list[str]) -> list[Any]:
    """One value for every join, or a list with one per join."""
    if isinstance(value, (list, tuple)):
        if len(value) != joins:
            problems.append(f"{what} has {len(value)} values but there are {joins} joins")
            return [value[0] if value else None] * joins
        return list(value)
    return [value] * joins


def _seed_for(seed: int, i: int) -> int:
    return seed + i if seed >= 0 else -1


# ----------------------------------------------------------------------------------------- join_clips
def plan_join(clip_frames: Sequence[int], *, context: int | Sequence[int] = DEFAULT_CONTEXT,
              gap: int | None | Sequence[int | None] = None, replace: bool = False, loop: bool = False,
              prompts: str | Sequence[str] = "", seed: int = -1) -> EditPlan:
    """The bridges and pieces of joining clips with the given frame counts (see the module docstring)."""
    n = len(clip_frames)
    if n < 2:
        raise InvalidInput(f"join_clips needs at least 2 clips to join, got {n}")
    if n > MAX_CLIPS:
        raise InvalidInput(f"join_clips takes at most {MAX_CLIPS} clips, got {n}")
    joins = n if loop else n - 1
    problems: list[str] = []
    contexts = _per_join(context, joins, "context_frames", problems)
    gaps = _per_join(gap, joins, "gap_frames", problems)
    prompt_list = _per_join(prompts, joins, "prompt", problems)
    adjustments: dict[str, Any] = {}
    plans: list[tuple[int, int, int, int]] = []  # (a, b, c, g) per join
    for j in range(joins):
        a, b = j, (j + 1) % n
        c, g = contexts[j], gaps[j]
        if not isinstance(c, int) or isinstance(c, bool) or c < 0:
            problems.append(f"context_frames of join {j} must be a whole number >= 0, got {c!r}")
            continue
        if g is None:
            g = wan_frame_count(2 * c + DEFAULT_GAP_TARGET) - 2 * c
        elif not isinstance(g, int) or isinstance(g, bool) or g < 1:
            problems.append(f"gap_frames of join {j} must be a whole number >= 1, got {g!r}")
            continue
        else:
            asked = 2 * c + g
            if asked > MAX_FRAMES:
                problems.append(f"join {j} would generate {asked} frames (2 x {c} context + {g} gap), more "
                                f"than {MAX_FRAMES}")
                continue
            used = wan_frame_count(asked)
            if used - 2 * c < 1:
                used += 4
            if used != asked:
                adjustments[f"gap_frames[{j}]"] = [g, used - 2 * c]
                g = used - 2 * c
        plans.append((a, b, c, g))
    if problems:
        raise InvalidInput("join_clips params: " + "; ".join(problems))

    replaced_tail = [0] * n   # frames of clip i replaced at its end (by its outgoing join)
    replaced_head = [0] * n   # frames of clip i replaced at its start (by its incoming join)
    need_ctx_out = [0] * n
    need_ctx_in = [0] * n
    for a, b, c, g in plans:
        if replace:
            replaced_tail[a] = g // 2
            replaced_head[b] = g - g // 2
        need_ctx_out[a] = c
        need_ctx_in[b] = c
    for i, frames in enumerate(clip_frames):
        need = replaced_head[i] + replaced_tail[i] + max(need_ctx_in[i], need_ctx_out[i])
        if frames < max(need, 1):
            parts = [f"{max(need_ctx_in[i], need_ctx_out[i])} context frames"]
            if replace:
                parts.append(f"{replaced_head[i] + replaced_tail[i]} replaced frames")
            problems.append(f"clip {i} has {frames} frames, fewer than its context needs "
                            f"({' + '.join(parts)} = {need})")
    if problems:
        raise InvalidInput("join_clips: " + "; ".join(problems))

    bridges: list[BridgePlan] = []
    for j, (a, b, c, g) in enumerate(plans):
        ra, rb = (g // 2, g - g // 2) if replace else (0, 0)
        end_a = clip_frames[a] - ra
        before = FrameRange(a, end_a - c, end_a) if c else None
        after = FrameRange(b, rb, rb + c) if c else None
        bridges.append(BridgePlan(index=j, key=f"join-{j:03d}", before=before, gap=g, after=after,
                                  prompt=str(prompt_list[j] or ""), seed=_seed_for(seed, j), replaced=ra + rb))
    pieces: list[Piece] = []
    for i in range(n):
        pieces.append(Piece("clip", i, replaced_head[i], clip_frames[i] - replaced_tail[i]))
        if i < len(bridges):
            br = bridges[i]
            pieces.append(Piece("bridge", i, br.gap_start, br.gap_start + br.gap))
    expected = sum(clip_frames) - sum(b.replaced for b in bridges) + sum(b.gap for b in bridges)
    plan = EditPlan(bridges=bridges, pieces=[p for p in pieces if p.frames > 0], expected_frames=expected,
                    adjustments=adjustments)
    check_pieces(plan)
    return plan


def check_pieces(plan: EditPlan) -> None:
    """The pieces add up to the formula's count (a guard against an arithmetic slip, not user input)."""
    total = sum(p.frames for p in plan.pieces)
    if total != plan.expected_frames:
        raise AssertionError(f"editing plan pieces add up to {total} frames, the formula says "
                             f"{plan.expected_frames}")


# ----------------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Window:
    """A generation window around frames [start, end) of a video: [start - before, end + after)."""

    start: int
    end: int
    before: int
    after: int

    @property
    def frames(self) -> int:
        return self.before + (self.end - self.start) + self.after


def fit_window(start: int, end: int, *, context: int, room_before: int, room_after: int,
               what: str, adjustments: dict[str, Any] | None = None) -> Window:
    """Context on both sides of [start, end), at most `context` and the room there is, adjusted so the
    window is 4n+1 frames (context changes only; the range itself is never changed)."""
    n = end - start
    before, after = min(context, room_before), min(context, room_after)
    asked = before + n + after
    if n > MAX_FRAMES:
        raise InvalidInput(f"{what} is {n} frames long, more than the {MAX_FRAMES} frames one generation makes")
    target = wan_frame_count(min(asked, MAX_FRAMES))
    if target < n:  # cannot drop frames of the range itself: grow the context to the next 4n+1 instead
        target += 4
    while before + n + after > target:  # drop context, the larger side first
        if before >= after and before > 0:
            before -= 1
        elif after > 0:
            after -= 1
        else:
            break
    while before + n + after < target:  # add context where the video has it
        if after < room_after and (after <= before or before >= room_before):
            after += 1
        elif before < room_before:
            before += 1
        else:
            raise InvalidInput(f"{what} is {n} frames and the video has only {room_before} frames before it "
                               f"and {room_after} after it, too few to make a {target}-frame (4n+1) "
                               f"generation window; make the range {wan_frame_count(n)} or "
                               f"{wan_frame_count(n) + 4} frames long")
    if (before, after) != (min(context, room_before), min(context, room_after)) and adjustments is not None:
        adjustments[f"context_frames of {what}"] = [[min(context, room_before), min(context, room_after)],
                                                    [before, after]]
    return Window(start=start, end=end, before=before, after=after)


def plan_inpaint(video_frames: int, start: int, end: int, *, context: int = DEFAULT_CONTEXT,
                 adjustments: dict[str, Any] | None = None) -> Window:
    """The window of an inpaint_frames task (the range [start, end) is checked against the video)."""
    _check_context(context)
    _check_range(start, end, video_frames, "the range")
    return fit_window(start, end, context=context, room_before=start, room_after=video_frames - end,
                      what=f"the range [{start}, {end})", adjustments=adjustments)


def _check_context(context: Any) -> None:
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise InvalidInput(f"context_frames must be a whole number >= 0, got {context!r}")


def _check_range(start: Any, end: Any, video_frames: int, what: str) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise InvalidInput(f"{what}: start_frame and end_frame must be whole numbers, got {start!r}, {end!r}")
    if start < 0:
        raise InvalidInput(f"{what} [{start}, {end}) starts before frame 0")
    if end > video_frames:
        raise InvalidInput(f"{what} [{start}, {end}) runs past the end of the video ({video_frames} frames, "
                           f"so end_frame is at most {video_frames})")
    if end <= start:
        raise InvalidInput(f"{what} [{start}, {end}) is empty: end_frame (exclusive) must be after start_frame")


# ----------------------------------------------------------------------------------------- edit_video
def plan_edit(video_frames: int, portions: Sequence[tuple[int, int, str]], *, context: int = DEFAULT_CONTEXT,
              seed: int = -1) -> EditPlan:
    """Keepers and regenerated portions of one video (clip 0); portions are (start, end, prompt)."""
    _check_context(context)
    if not portions:
        raise InvalidInput("portions_to_regenerate is empty: name at least one {start_frame, end_frame} range")
    if len(portions) > MAX_PORTIONS:
        raise InvalidInput(f"at most {MAX_PORTIONS} portions, got {len(portions)}")
    problems: list[str] = []
    for k, (s, e, _) in enumerate(portions):
        try:
            _check_range(s, e, video_frames, f"portion {k}")
        except InvalidInput as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidInput("; ".join(problems))
    order = sorted(range(len(portions)), key=lambda k: portions[k][0])
    for k1, k2 in zip(order, order[1:]):
        (s1, e1, _), (s2, e2, _) = portions[k1], portions[k2]
        if s2 < e1:
            problems.append(f"portion {k1} [{s1}, {e1}) and portion {k2} [{s2}, {e2}) overlap")
    if problems:
        raise InvalidInput("; ".join(problems))
    adjustments: dict[str, Any] = {}
    bridges: list[BridgePlan] = []
    pieces: list[Piece] = []
    cursor = 0
    for j, k in enumerate(order):
        s, e, prompt = portions[k]
        prev_end = portions[order[j - 1]][1] if j > 0 else 0
        next_start = portions[order[j + 1]][0] if j + 1 < len(order) else video_frames
        w = fit_window(s, e, context=context, room_before=s - prev_end, room_after=next_start - e,
                       what=f"portion {k} [{s}, {e})", adjustments=adjustments)
        bridges.append(BridgePlan(index=j, key=f"portion-{j:03d}",
                                  before=FrameRange(0, s - w.before, s) if w.before else None, gap=e - s,
                                  after=FrameRange(0, e, e + w.after) if w.after else None,
                                  prompt=str(prompt or ""), seed=_seed_for(seed, j), replaced=e - s))
        if s > cursor:
            pieces.append(Piece("clip", 0, cursor, s))
        pieces.append(Piece("bridge", j, w.before, w.before + (e - s)))
        cursor = e
    if cursor < video_frames:
        pieces.append(Piece("clip", 0, cursor, video_frames))
    plan = EditPlan(bridges=bridges, pieces=pieces, expected_frames=video_frames, adjustments=adjustments)
    check_pieces(plan)
    return plan
