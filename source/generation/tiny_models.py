"""Tiny random-weight Wan pipelines and LoRAs, built offline on first use.

Each pipeline is built in memory, saved with save_pretrained into a temp folder and renamed to
$HEADLESS_MODEL_CACHE/tiny/<name> (atomic), under an fcntl lock so several worker processes starting at
once build it once. Afterwards they load through the same from_pretrained path as real checkpoints.

The text side replaces the Hub's tiny T5 with a locally built UMT5 encoder and Unigram tokenizer, so
nothing touches the network.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from source.files import build_once, exclusive_lock

TINY_KINDS = ("t2v", "i2v", "flf2v", "vace", "i2v22")
RECIPE_VERSION = "tiny-v1"  # bump when the recipe changes: it is part of the tiny models' "revision"
TEXT_DIM = 32

_WORDS = (
    "a an the of and in on at to with for is are man woman person dog cat monkey dance "
    "dancing walk walking run running camera slow fast motion video frame scene light dark "
    "red green blue white black city street forest sky water sea sun night day close up wide "
    "shot smooth cinematic realistic negative blurry low quality bad static still zoom pan "
    "left right turn jump smile look"
).split()


def model_cache_dir() -> Path:
    from source.settings import settings

    d = settings().model_cache.expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def tiny_dir() -> Path:
    d = model_cache_dir() / "tiny"
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- components ------------------------------------------------------------------------------------
def _tokenizer():
    import transformers

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    seen = {p for p, _ in vocab}
    for w in _WORDS:
        p = "\u2581" + w
        if p not in seen:
            vocab.append((p, -3.0))
            seen.add(p)
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()\"/":
        for p in (c, "\u2581" + c):
            if p not in seen:
                vocab.append((p, -8.0))
                seen.add(p)
    if int(transformers.__version__.split(".")[0]) >= 5:
        return transformers.T5Tokenizer(vocab=vocab, extra_ids=0)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tk = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")])
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    return transformers.T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", extra_ids=0, additional_special_tokens=[])


def _text_encoder(vocab_size: int):
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=8, relative_attention_max_distance=16,
                     feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    return UMT5EncoderModel(cfg).eval()


def _vae():
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _tr_kwargs(**over):
    kw = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
              text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
    kw.update(over)
    return kw


def _transformer(seed: int = 0, **over):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**_tr_kwargs(**over))


def _clip(image_size: int = 4):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    enc = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, num_hidden_layers=2, num_attention_heads=2,
                                           image_size=image_size, intermediate_size=16, patch_size=1)).eval()
    return enc, CLIPImageProcessor(crop_size=image_size, size=image_size)


def build_pipeline(kind: str):
    """A tiny random-weight pipeline of the given kind, in memory."""
    import torch
    from diffusers import (
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {TINY_KINDS}")
    tok = _tokenizer()
    common = dict(tokenizer=tok, text_encoder=_text_encoder(len(tok)), vae=_vae(),
                  scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                    flow_shift=3.0))
    if kind == "t2v":
        return WanPipeline(transformer=_transformer(), **common)
    if kind == "i2v":
        enc, proc = _clip()
        return WanImageToVideoPipeline(transformer=_transformer(in_channels=36, image_dim=4, added_kv_proj_dim=24),
                                       image_encoder=enc, image_processor=proc, **common)
    if kind == "flf2v":
        enc, proc = _clip()
        return WanImageToVideoPipeline(
            transformer=_transformer(in_channels=36, image_dim=4, added_kv_proj_dim=24,
                                     pos_embed_seq_len=2 * (4 * 4 + 1)),
            image_encoder=enc, image_processor=proc, **common)
    if kind == "vace":
        torch.manual_seed(0)
        tr = WanVACETransformer3DModel(**_tr_kwargs(num_layers=3, vace_layers=[0, 2], vace_in_channels=96))
        return WanVACEPipeline(transformer=tr, **common)
    # i2v22: two experts with different weights, no CLIP, boundary_ratio
    return WanImageToVideoPipeline(transformer=_transformer(0, in_channels=36),
                                   transformer_2=_transformer(1, in_channels=36),
                                   image_encoder=None, image_processor=None, boundary_ratio=0.875, **common)


def ensure_tiny_model(kind: str) -> Path:
    """The folder of the tiny model `kind`, built once (atomically, under a lock) if missing."""
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {TINY_KINDS}")
    def build(folder: Path) -> None:
        pipe = build_pipeline(kind)
        with quiet():
            pipe.save_pretrained(folder)
        (folder / "RECIPE").write_text(RECIPE_VERSION + "\n")

    return build_once(tiny_dir() / kind, build, ready=lambda target: (target / "model_index.json").is_file())


def ensure_all_tiny_models() -> Path:
    for kind in TINY_KINDS:
        ensure_tiny_model(kind)
    return tiny_dir()


@contextlib.contextmanager
def quiet():
    """Hide the loading / 'Writing model shards' progress bars of diffusers and transformers."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()


# -- LoRAs ---------------------------------------------------------------------------------------------
def _lora_targets(transformer):
    """(wan_key_prefix, linear) pairs for every block's attention and FFN projections."""
    out = []
    for i, blk in enumerate(transformer.blocks):
        for o, name in zip("qkvo", ["to_q", "to_k", "to_v", "to_out"]):
            for wan_attn, attn in (("self_attn", blk.attn1), ("cross_attn", blk.attn2)):
                lin = attn.to_out[0] if name == "to_out" else getattr(attn, name)
                out.append((f"blocks.{i}.{wan_attn}.{o}", lin))
        if getattr(blk.attn2, "add_k_proj", None) is not None:
            out.append((f"blocks.{i}.cross_attn.k_img", blk.attn2.add_k_proj))
            out.append((f"blocks.{i}.cross_attn.v_img", blk.attn2.add_v_proj))
        out.append((f"blocks.{i}.ffn.0", blk.ffn.net[0].proj))
        out.append((f"blocks.{i}.ffn.2", blk.ffn.net[2]))
    return out


def ensure_tiny_lora(kind: str = "t2v", fmt: str = "wan", seed: int = 2, scale: float = 0.3) -> Path:
    """A tiny LoRA file for the tiny `kind` transformer; fmt "wan" (original Wan/ComfyUI keys, as CausVid and
    LightX2V ship) or "peft" (diffusers/peft keys). Returns the .safetensors path."""
    import torch
    from safetensors.torch import save_file

    root = tiny_dir() / "loras"
    path = root / f"{kind}_{fmt}_{seed}.safetensors"
    if path.is_file():
        return path
    with exclusive_lock(root / ".lock"):
        if path.is_file():
            return path
        from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

        model_dir = ensure_tiny_model(kind)
        cls = WanVACETransformer3DModel if kind == "vace" else WanTransformer3DModel
        with quiet():
            tr = cls.from_pretrained(model_dir, subfolder="transformer")
        tensors: dict[str, torch.Tensor] = {}
        if fmt == "wan":
            g = torch.Generator().manual_seed(seed)
            r = 4
            for prefix, lin in _lora_targets(tr):
                down = torch.randn(r, lin.in_features, generator=g) * scale
                up = torch.randn(lin.out_features, r, generator=g) * scale
                tensors[f"diffusion_model.{prefix}.lora_down.weight"] = down
                tensors[f"diffusion_model.{prefix}.lora_up.weight"] = up
                tensors[f"diffusion_model.{prefix}.alpha"] = torch.tensor(float(r))
        elif fmt == "peft":
            from peft import LoraConfig, get_peft_model_state_dict

            targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
            if getattr(tr.blocks[0].attn2, "add_k_proj", None) is not None:
                targets += ["add_k_proj", "add_v_proj"]
            torch.manual_seed(seed)
            tr.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=targets))
            sd = get_peft_model_state_dict(tr)
            tensors = {f"transformer.{k}": v.detach().clone().contiguous() for k, v in sd.items()}
        else:
            raise ValueError(f"unknown LoRA format {fmt!r} (wan or peft)")
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    return path
