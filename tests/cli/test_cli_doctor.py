"""``sam3agent doctor``: each check says what it found and, when it fails, the fix. Offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam3agent.app import doctor
from sam3agent.app.cli import main
from sam3agent.llm.server import ScriptedOpenAIServer


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def lines_of(output: str, marker: str) -> list[str]:
    """The line containing ``marker`` and the fix line after it."""
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if marker in line)
    return lines[index: index + 2]


def test_dead_endpoint_and_missing_weights(dead_url, capsys) -> None:
    code = main(["doctor", "--llm-base-url", dead_url, "--sam3", "nobody/no-such-sam3"])
    out = capsys.readouterr().out
    assert code == 1
    weights = lines_of(out, "SAM 3 weights (nobody/no-such-sam3)")
    assert weights[0].startswith("FAIL") and "not in the local hub cache and the hub is offline" in weights[0]
    assert weights[1].strip().startswith("fix:") and "hf download nobody/no-such-sam3" in weights[1]
    endpoint = lines_of(out, f"LLM endpoint ({dead_url})")
    assert endpoint[0].startswith("FAIL") and f"nothing answers at {dead_url}" in endpoint[0]
    assert "fix: start vLLM with `vllm serve Qwen/Qwen2.5-VL-7B-Instruct" in endpoint[1]
    assert f"--port {dead_url.split(':')[2].split('/')[0]}`" in endpoint[1]
    assert out.rstrip().endswith("2 check(s) failed")


def test_all_good_with_local_weights_and_a_live_endpoint(tiny_sam3_dir, capsys) -> None:
    with ScriptedOpenAIServer(models=["scripted", "other-model"]) as server:
        code = main(["doctor", "--llm-base-url", server.base_url, "--model", "scripted", "--sam3", str(tiny_sam3_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert lines_of(out, "SAM 3 weights")[0].startswith("OK") and f"local directory {tiny_sam3_dir}" in out
    assert "OK    LLM endpoint" in out and "serves scripted, other-model" in out
    assert "OK    torch stack: torch " in out and "OK    Python: Python 3." in out
    assert lines_of(out, "GPU:")[0].split()[0] in ("OK", "WARN")


def test_endpoint_not_listing_the_model_is_a_warning(capsys) -> None:
    """As ``run`` warns and goes on (a gateway may answer to unlisted names); see test_cli_first_minutes."""
    with ScriptedOpenAIServer(models=["qwen-small"]) as server:
        check = doctor.check_endpoint(server.base_url, "Qwen/Qwen2.5-VL-7B-Instruct")
    assert check.level == "warn"
    assert "does not list 'Qwen/Qwen2.5-VL-7B-Instruct' among its models; it serves: qwen-small" in check.detail
    assert "--model" in check.fix


def test_gemini_style_model_ids_match() -> None:
    assert doctor.model_served("gemini-2.0-flash", ["models/gemini-2.0-flash"])
    assert not doctor.model_served("gemini", ["models/gemini-2.0-flash"])


def test_local_model_dir_problems(tmp_path: Path) -> None:
    missing = doctor.check_weights(str(tmp_path / "absent"))
    assert missing.level == "fail" and "directory not found" in missing.detail and "--sam3" in missing.fix
    (tmp_path / "half").mkdir()
    assert "no config.json" in doctor.check_weights(str(tmp_path / "half")).detail
    (tmp_path / "half" / "config.json").write_text("{}")
    assert "no weight files" in doctor.check_weights(str(tmp_path / "half")).detail


def test_hub_cache_hit(monkeypatch, tmp_path) -> None:
    import huggingface_hub

    cached = {"config.json": str(tmp_path / "snap" / "config.json"), "model.safetensors": str(tmp_path / "w")}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: cached.get(name))
    check = doctor.check_weights("facebook/sam3")
    assert check.level == "ok" and "in the local hub cache" in check.detail


def test_gated_repo_online(monkeypatch) -> None:
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(doctor, "hub_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    response = SimpleNamespace(status_code=403, headers={}, request=None)  # what the error reads of a response

    def refuse(self, repo_id: str, **kwargs: object) -> None:
        raise GatedRepoError("access to model facebook/sam3 is restricted", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)
    check = doctor.check_weights("facebook/sam3")
    assert check.level == "fail" and "gated" in check.detail
    assert "https://huggingface.co/facebook/sam3" in check.fix and "hf auth login" in check.fix


def test_old_python_fails() -> None:
    check = doctor.check_python((3, 10, 14))
    assert check.level == "fail" and "3.10.14" in check.detail and "3.11" in check.fix
    assert doctor.check_python((3, 12, 0)).level == "ok"


def test_no_gpu_is_a_warning(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = doctor.check_cuda()
    assert check.level == "warn" and check.detail == "no GPU: SAM 3 will run on CPU, slowly"


def test_local_llm_checks_its_weights(tiny_sam3_dir, tmp_path) -> None:
    checks = doctor.run_doctor(sam3=str(tiny_sam3_dir), llm={"kind": "transformers", "model": str(tmp_path / "q")})
    last = checks[-1]
    assert last.name.startswith("in-process MLLM weights") and last.level == "fail" and "--llm-local" in last.fix
