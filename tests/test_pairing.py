"""Teacher/student pairs: refused before any compute when their vocabularies or chat templates differ (both model
names and the first differing token in the message, exit code 2 on the command line); prompts rendered through the
chat template once, for teacher and student alike; Llama-style BOS kept on plain decoder-only prompts."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.config import ParamsError, load_params
from kdlib.modeling.prompts import TokenizerMismatch, bos_prefix, first_token_difference, first_vocab_difference

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures/hub"
TEXTS = [line for f in sorted(FIX.rglob("*.jsonl")) for line in f.read_text().splitlines()] * 3
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _mirror_module():
    spec = importlib.util.spec_from_file_location("make_hub_mirror", ROOT / "scripts" / "make_hub_mirror.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    """Tokenizer folders (what from_pretrained reads): two Qwen-style ones with the same template, one whose
    template differs only in its default system turn, one with another vocabulary, one with no template, a Llama 3
    one (BOS prepended by its own template)."""
    mm = _mirror_module()
    root = tmp_path_factory.mktemp("toks")
    bpe = mm._bpe(TEXTS, mm.QWEN_PATTERN, 400)
    other = mm._bpe(TEXTS[::-1] + ["zebra quartz"] * 50, mm.QWEN_PATTERN, 420)
    made = {
        "qwen_math_instruct": mm.qwen_tokenizer(bpe, mm.QWEN25_SPECIAL, "<|im_end|>", "qwen2.5-math"),
        "qwen_math_base": mm.qwen_tokenizer(bpe, mm.QWEN25_SPECIAL, "<|endoftext|>", "qwen2.5-math"),
        "qwen_instruct": mm.qwen_tokenizer(bpe, mm.QWEN25_SPECIAL, "<|im_end|>", "qwen2.5"),
        "qwen_no_template": mm.qwen_tokenizer(bpe, mm.QWEN25_SPECIAL, "<|endoftext|>", None),
        "other_vocab": mm.qwen_tokenizer(other, mm.QWEN25_SPECIAL, "<|im_end|>", "qwen2.5-math"),
        "llama": mm.byte_bpe_tokenizer(mm._bpe(TEXTS, mm.LLAMA3_PATTERN, 400), mm.LLAMA3_PATTERN,
                                       mm.llama3_special("3.1"), "<|begin_of_text|>", "<|end_of_text|>", None,
                                       None, "PreTrainedTokenizerFast"),
    }
    for name, tok in made.items():
        tok.save_pretrained(root / name)
    return {name: str(root / name) for name in made}


def _params(teacher, student, tmp_path, **over):
    return load_params(ROOT / "params/paper/kit.yaml", ROOT / "params/paper/constrained_kd_qwen.yaml",
                       cache_dir=str(tmp_path), **{"models.teacher": teacher, "models.student": student,
                                                   "task.path": str(FIX / "gsm8k"), **over})


def test_a_pair_with_one_vocabulary_and_template_passes(toks, tmp_path):
    from kdlib.trainers.pairing import check_pair

    # The instruct teacher and the base student differ in their eos token only (not in the vocabulary).
    assert check_pair(_params(toks["qwen_math_instruct"], toks["qwen_math_base"], tmp_path)) == "checked"


def test_different_vocabularies_are_refused_naming_both_models_and_the_first_token(toks, tmp_path):
    from transformers import AutoTokenizer

    from kdlib.trainers.pairing import check_pair

    t, s = AutoTokenizer.from_pretrained(toks["qwen_math_instruct"]), AutoTokenizer.from_pretrained(toks["other_vocab"])
    i, tt, st = first_vocab_difference(t, s)
    assert tt != st and all(t.convert_ids_to_tokens(j) == s.convert_ids_to_tokens(j) for j in range(i))
    with pytest.raises(ParamsError) as e:
        check_pair(_params(toks["qwen_math_instruct"], toks["other_vocab"], tmp_path))
    msg = str(e.value)
    assert "models.student" in msg and toks["qwen_math_instruct"] in msg and toks["other_vocab"] in msg
    assert f"id {i}: {tt!r} (teacher) vs {st!r} (student)" in msg


def test_different_chat_templates_are_refused_at_the_first_differing_token(toks, tmp_path):
    from transformers import AutoTokenizer

    from kdlib.trainers.pairing import check_pair

    # No system turn in the params: each template's own default system turn differs (Math vs general Qwen2.5).
    p = _params(toks["qwen_math_instruct"], toks["qwen_instruct"], tmp_path,
                **{"task.system_prompt": None, "task.chat": True})
    with pytest.raises(ParamsError) as e:
        check_pair(p)
    msg = str(e.value)
    t = AutoTokenizer.from_pretrained(toks["qwen_math_instruct"])
    ids_t = t.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False, add_generation_prompt=True)
    ids_s = AutoTokenizer.from_pretrained(toks["qwen_instruct"]).apply_chat_template(
        [{"role": "user", "content": "q"}], tokenize=False, add_generation_prompt=True)
    pos = first_token_difference(t(ids_t, add_special_tokens=False)["input_ids"],
                                 t(ids_s, add_special_tokens=False)["input_ids"])
    assert "chat templates differ" in msg and f"from token {pos} on" in msg
    assert toks["qwen_math_instruct"] in msg and toks["qwen_instruct"] in msg
    # The same two templates agree once the params give the system turn explicitly.
    assert check_pair(_params(toks["qwen_math_instruct"], toks["qwen_instruct"], tmp_path)) == "checked"
    with pytest.raises(ParamsError, match="has one and student has none"):
        check_pair(_params(toks["qwen_math_instruct"], toks["qwen_no_template"], tmp_path))


def test_the_command_line_refuses_a_mismatched_pair_with_exit_2_before_any_compute(toks, tmp_path):
    cmd = [sys.executable, "-m", "kdlib", "train", "-f", "params/paper/kit.yaml", "-f",
           "params/paper/constrained_kd_qwen.yaml", "--set", f"cache_dir={tmp_path / 'cache'}",
           "--set", f"task.path={FIX / 'gsm8k'}", "--set", f"models.teacher={toks['qwen_math_instruct']}",
           "--set", f"models.student={toks['other_vocab']}", "--set", "method=cmdp"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "do not share a vocabulary" in r.stderr and toks["other_vocab"] in r.stderr
    assert not (tmp_path / "cache").exists()  # nothing loaded, nothing trained


def test_chat_prompts_are_rendered_once_for_teacher_and_student(toks, tmp_path):
    from kdlib.trainers.tasks import encode_prompts, load_task_bundle, rendered_prompt

    p = _params(toks["qwen_math_instruct"], toks["qwen_math_base"], tmp_path)
    task = load_task_bundle(p)
    question = task.sources["test"][0]
    rec = rendered_prompt(p)
    want = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    assert rec["student"] == want and rec["teacher"] == want and rec["identical"]
    assert task.student_src["test"][0] == task.teacher_src["test"][0]
    assert encode_prompts(p, task, [question], "student") == [task.student_src["test"][0]]
    # Plain prompts (chat off): the filled template, no chat markup.
    plain = _params(toks["qwen_math_instruct"], toks["qwen_math_base"], tmp_path,
                    **{"task.chat": False, "task.system_prompt": None})
    assert load_task_bundle(plain).tok.decode(load_task_bundle(plain).student_src["test"][0]) == question


def test_chat_needs_a_template(toks, tmp_path):
    from kdlib.trainers.pairing import check_pair

    p = _params(toks["qwen_no_template"], toks["qwen_no_template"], tmp_path)
    with pytest.raises(ParamsError, match="no chat template"):
        check_pair(p)
    with pytest.raises(ParamsError, match="task.system_prompt"):
        _params(toks["qwen_no_template"], toks["qwen_no_template"], tmp_path, **{"task.chat": False})


def test_decoder_only_prompts_keep_the_tokenizers_own_bos_once(toks):
    from transformers import AutoTokenizer

    from kdlib.trainers.tasks import encode_sources

    llama = AutoTokenizer.from_pretrained(toks["llama"])
    qwen = AutoTokenizer.from_pretrained(toks["qwen_math_base"])
    assert bos_prefix(llama) == llama.convert_tokens_to_ids("<|begin_of_text|>") and bos_prefix(qwen) is None
    [ids] = encode_sources(llama, ["Q: 2 + 3?"], "causal", 64)
    assert ids[0] == bos_prefix(llama) and ids[1:] == llama("Q: 2 + 3?", add_special_tokens=False)["input_ids"]
    [again] = encode_sources(llama, ["<|begin_of_text|>Q: 2 + 3?"], "causal", 64)
    assert again == ids  # a chat-rendered prompt already starts with it: not doubled
    [plain] = encode_sources(qwen, ["Q: 2 + 3?"], "causal", 64)
    assert plain == qwen("Q: 2 + 3?", add_special_tokens=False)["input_ids"]


def test_every_paper_profile_model_id_has_a_mirror_recipe():
    mm = _mirror_module()
    ids = mm.paper_model_ids()
    assert {"google/flan-t5-xl", "t5-base", "t5-small", "t5-large", "Qwen/Qwen1.5-4B", "Qwen/Qwen1.5-0.5B",
            "Qwen/Qwen2.5-Math-7B-Instruct", "Qwen/Qwen2.5-Math-1.5B", "meta-llama/Meta-Llama-3-70B-Instruct",
            "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-72B-Instruct",
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"} <= set(ids)
    assert not set(ids) - set(mm.MODELS), "params/paper names models the mirror cannot write"
    assert ("openai/gsm8k", "main") in mm.paper_dataset_ids() and ("apple/GSM-Symbolic", "main") in mm.paper_dataset_ids()


def test_token_mismatch_is_a_value_error():
    assert issubclass(TokenizerMismatch, ValueError)
    assert first_token_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_token_difference([1, 2, 3], [1, 5, 3]) == 1 and first_token_difference([1, 2], [1, 2, 3]) == 2
