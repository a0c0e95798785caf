"""What a run records about its software, machine and inputs (qtuning.training.environment)."""

import hashlib

from qtuning.training import environment as env_module
from qtuning.training.environment import environment, input_fingerprint, package_versions


def test_a_file_is_recognised_by_its_sha256(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "q", "completion": "a"}\n')
    fingerprint = input_fingerprint(str(data))
    assert fingerprint == {
        "path": str(data.resolve()),
        "bytes": data.stat().st_size,
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
    }


def test_a_folder_hash_covers_names_and_contents(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    first = input_fingerprint(str(folder))
    # by hand: sorted relative paths, each with its file's sha256
    digest = hashlib.sha256()
    for name, content in [("config.json", b"{}"), ("sub/weights.bin", b"\x00\x01")]:
        digest.update(f"{name}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    assert first == {"path": str(folder.resolve()), "files": 2, "bytes": 4, "sha256": digest.hexdigest()}
    assert input_fingerprint(str(folder)) == first  # stable
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x02")  # same size, other bytes
    assert input_fingerprint(str(folder))["sha256"] != first["sha256"]
    (folder / "sub" / "weights.bin").rename(folder / "sub" / "other.bin")  # same bytes, other name
    (folder / "sub" / "other.bin").write_bytes(b"\x00\x01")
    assert input_fingerprint(str(folder))["sha256"] != first["sha256"]


def test_a_folder_over_the_limit_is_listed_not_hashed(tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x" * 10)
    (folder / "b.bin").write_bytes(b"y" * 5)
    monkeypatch.setattr(env_module, "HASH_LIMIT_BYTES", 12)
    fingerprint = input_fingerprint(str(folder))
    assert fingerprint["sha256"] is None and fingerprint["bytes"] == 15
    assert fingerprint["files_listed"] == [["a.bin", 10], ["b.bin", 5]]


def test_names_are_recorded_as_built_in_or_as_given():
    assert input_fingerprint("Alpaca-Demo", ["alpaca-demo", "gsm8k"]) == {"builtin": "Alpaca-Demo"}
    assert input_fingerprint("HuggingFaceTB/SmolLM2-135M", ["alpaca-demo"]) == {"name": "HuggingFaceTB/SmolLM2-135M"}


def test_the_environment_names_the_software_and_the_machine():
    import torch

    env = environment("cpu", 2)
    assert env["device"] == "cpu" and env["accelerator"] is None and env["world_size"] == 2
    assert env["torch_build"] == torch.__version__ and env["cpu_count"] >= 1
    versions = package_versions()
    assert env["packages"] == versions and {"qtuning", "torch", "transformers", "trl"} <= set(versions)


def test_hidden_entries_are_left_out_and_linked_folders_followed_once(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    plain = input_fingerprint(str(folder))
    # download metadata and a lock file: not the model
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "x.metadata").write_text("etag, time")
    (folder / ".lock").write_text("")
    assert input_fingerprint(str(folder)) == plain
    # weights in a linked folder count; a link back to the folder itself ends
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"w")
    (folder / "weights").symlink_to(tmp_path / "weights")
    (folder / "weights" / "loop").symlink_to(folder)
    (folder / "broken").symlink_to(tmp_path / "nothing")  # a broken link is not a file
    linked = input_fingerprint(str(folder))
    assert linked["files"] == 2 and linked["bytes"] == 3 and linked["sha256"] != plain["sha256"]


def test_an_unreadable_input_is_recorded_not_raised(tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")

    def refuse(path, block=1 << 20):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(env_module, "sha256_of", refuse)
    assert input_fingerprint(str(data)) == {"path": str(data), "error": "PermissionError: Permission denied"}
    assert input_fingerprint(str(tmp_path))["error"] == "PermissionError: Permission denied"


def test_a_file_over_the_limit_is_sized_not_hashed(tmp_path, monkeypatch):
    data = tmp_path / "big.gguf"
    data.write_bytes(b"x" * 20)
    monkeypatch.setattr(env_module, "HASH_LIMIT_BYTES", 12)
    assert input_fingerprint(str(data)) == {"path": str(data.resolve()), "bytes": 20, "sha256": None}


def test_the_report_reads_malformed_environment_blocks():
    from qtuning.insight.run_report import environment_rows

    assert environment_rows({"environment": {"device": "cpu", "packages": "torch"}, "inputs": ["x"]}) == [
        ["device", "cpu"],
        ["packages", "torch"],  # shown as it is, not read as a table
    ]
    assert environment_rows({"environment": None}) == []
