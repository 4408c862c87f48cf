"""Probe tests. NVML is faked at its one choke point (``nvml._load_library``) and nowhere else."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from portllm_edge.errors import ConfigError, HardwareError
from portllm_edge.hardware import format_size, map_cuda_visible_devices, nvml, parse_size, probe
from portllm_edge.hardware.host import probe_disk, read_cgroup_limit
from portllm_edge.planning import memory_budget, select_devices

GiB = 1024**3


class NVMLError(Exception):
    def __init__(self, value: int = 999) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(3)


class NVMLError_NotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(6)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(12)


def fake_nvml(devices: list[dict], *, init_error: type[Exception] | None = None) -> SimpleNamespace:
    """A pynvml stand-in. Each device dict: name, uuid, total, free, cc, and optionally mig (list of dicts),
    memory_not_supported."""
    handles: dict[str, dict] = {}

    def init() -> None:
        if init_error is not None:
            raise init_error()

    def handle(i: int) -> str:
        handles[f"h{i}"] = devices[i]
        return f"h{i}"

    def mem(h: str) -> SimpleNamespace:
        d = handles[h]
        if d.get("memory_not_supported"):
            raise NVMLError_NotSupported()
        return SimpleNamespace(total=d["total"], free=d["free"], used=d["total"] - d["free"])

    def mig_mode(h: str) -> tuple[int, int]:
        if "mig" not in handles[h]:
            raise NVMLError_NotSupported()
        return (1, 1)

    def mig_handle(h: str, m: int) -> str:
        slices = handles[h]["mig"]
        if m >= len(slices):
            raise NVMLError_NotFound()
        key = f"{h}m{m}"
        handles[key] = slices[m]
        return key

    def cc(h: str) -> tuple[int, int]:
        d = handles[h]
        if d.get("cc") is None:
            raise NVMLError_NotSupported()
        return d["cc"]

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVMLError_NotSupported=NVMLError_NotSupported,
        NVML_ERROR_NOT_SUPPORTED=3,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54.14",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=lambda h: handles[h]["name"].encode(),
        nvmlDeviceGetUUID=lambda h: handles[h]["uuid"],
        nvmlDeviceGetMemoryInfo=mem,
        nvmlDeviceGetCudaComputeCapability=cc,
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
    )


@pytest.fixture
def use_nvml(monkeypatch) -> Callable[[SimpleNamespace | Exception], None]:
    """Install a fake NVML at the choke point; reset state before and after."""

    def install(lib: SimpleNamespace | Exception) -> None:
        def load() -> SimpleNamespace:
            if isinstance(lib, Exception):
                raise lib
            return lib

        monkeypatch.setattr(nvml, "_load_library", load)
        nvml.reset()

    yield install
    nvml.reset()


@pytest.fixture
def no_cgroup(tmp_path) -> dict:
    """Probe kwargs pointing at an empty cgroup root and no Jetson marker."""
    return {
        "cgroup_root": tmp_path / "cg",
        "proc_self_cgroup": tmp_path / "proc-cgroup",
        "tegra_release": tmp_path / "no-tegra",
        "store_path": tmp_path,
        "environ": {},
    }


RTX3060 = {
    "name": "NVIDIA GeForce RTX 3060",
    "uuid": "GPU-3060aaaa-1111",
    "total": 12 * GiB,
    "free": 11 * GiB,
    "cc": (8, 6),
}


# --- the four NVML cases ----------------------------------------------------------------------------


def test_no_nvml_library_gives_no_gpus_and_a_reason(use_nvml, no_cgroup):
    use_nvml(ImportError("No module named 'pynvml'"))
    rep = probe(**no_cgroup)
    assert rep.gpus == ()
    assert "not installed" in rep.nvml_status
    assert rep.driver_version is None
    assert rep.host.total_bytes > 0  # host RAM still read
    assert memory_budget(report=rep).device == "cpu"


def test_nvml_without_driver_is_not_available(use_nvml, no_cgroup):
    use_nvml(fake_nvml([], init_error=NVMLError_LibraryNotFound))
    rep = probe(**no_cgroup)
    assert rep.gpus == ()
    assert rep.nvml_status.startswith("NVML unavailable")


def test_probe_command_names_nvml_once(use_nvml, capsys):
    from portllm_edge.cli import main

    use_nvml(fake_nvml([], init_error=NVMLError_LibraryNotFound))
    assert main(["probe"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("NVML unavailable: ") and "NVML: NVML" not in first


def test_consumer_gpu_reading_in_bytes(use_nvml, no_cgroup):
    use_nvml(fake_nvml([RTX3060]))
    rep = probe(**no_cgroup)
    (gpu,) = rep.gpus
    assert gpu.name == "NVIDIA GeForce RTX 3060"  # bytes decoded at the choke point
    assert (gpu.total_bytes, gpu.free_bytes, gpu.used_bytes) == (12 * GiB, 11 * GiB, 1 * GiB)
    assert gpu.compute_capability == (8, 6)
    assert gpu.torch_index == 0 and not gpu.is_mig and not gpu.unified_memory
    assert gpu.total_human() == "12.00 GiB"
    assert rep.driver_version == "550.54.14" and rep.cuda_driver_version == "12.4"
    budget = memory_budget(report=rep, headroom_fraction=0.1)
    assert (budget.device, budget.available_bytes, budget.usable_bytes) == (
        "cuda",
        11 * GiB,
        int(11 * GiB * 0.9),
    )
    assert budget.bf16 is True


def test_mig_slices_replace_their_parent_and_budget_uses_one_slice(use_nvml, no_cgroup):
    a100 = {
        "name": "NVIDIA A100-SXM4-40GB",
        "uuid": "GPU-a100",
        "total": 40 * GiB,
        "free": 40 * GiB,
        "cc": (8, 0),
        "mig": [
            {
                "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
                "uuid": "MIG-slice0",
                "total": 20 * GiB,
                "free": 19 * GiB,
            },
            {
                "name": "NVIDIA A100-SXM4-40GB MIG 2g.10gb",
                "uuid": "MIG-slice1",
                "total": 10 * GiB,
                "free": 9 * GiB,
            },
        ],
    }
    use_nvml(fake_nvml([a100]))
    rep = probe(**no_cgroup)
    assert [g.uuid for g in rep.gpus] == ["MIG-slice0", "MIG-slice1"]
    assert all(g.is_mig for g in rep.gpus)
    assert [g.total_bytes for g in rep.gpus] == [20 * GiB, 10 * GiB]
    budget = memory_budget(report=rep, headroom_fraction=0.0)
    assert budget.available_bytes == 19 * GiB  # one slice, never the sum (28 GiB) nor the parent (40 GiB)
    assert [g.uuid for g in select_devices("15GiB", report=rep)] == ["MIG-slice0"]


def test_not_supported_memory_falls_back_to_host_ram(use_nvml, no_cgroup):
    orin = {
        "name": "Orin",
        "uuid": "GPU-orin",
        "total": 0,
        "free": 0,
        "cc": None,
        "memory_not_supported": True,
    }
    use_nvml(fake_nvml([orin]))
    rep = probe(**no_cgroup)
    (gpu,) = rep.gpus
    assert gpu.unified_memory
    assert gpu.total_bytes == rep.host.total_bytes and gpu.free_bytes == rep.host.available_bytes
    assert gpu.compute_capability is None  # NotSupported field -> None, no crash
    assert any("unified" in n for n in rep.notes)
    assert memory_budget(report=rep).device == "unified"


def test_unknown_function_logged_once(use_nvml, caplog):
    use_nvml(fake_nvml([RTX3060]))
    with caplog.at_level(logging.WARNING, logger="portllm_edge.hardware.nvml"):
        first = nvml.nvml_query("nvmlDeviceGetFancyNewThing", "h0")
        second = nvml.nvml_query("nvmlDeviceGetFancyNewThing", "h0")
    assert isinstance(first, nvml.NotAvailable) and not first and str(second) == "n/a"
    assert sum("nvmlDeviceGetFancyNewThing" in r.message for r in caplog.records) == 1


# --- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------------


def _gpus(use_nvml, no_cgroup, cvd: str | None):
    second = {
        **RTX3060,
        "uuid": "GPU-4090bbbb-2222",
        "name": "NVIDIA GeForce RTX 4090",
        "total": 24 * GiB,
        "free": 23 * GiB,
    }
    use_nvml(fake_nvml([RTX3060, second]))
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    return probe(**{**no_cgroup, "environ": env})


@pytest.mark.parametrize(
    ("cvd", "expected"),
    [
        (None, [0, 1]),
        ("1,0", [1, 0]),
        ("1", [None, 0]),
        ("GPU-4090", [None, 0]),
        ("0,7,1", [0, None]),  # parsing stops at the first unknown entry
        ("-1", [None, None]),
        ("", [None, None]),
    ],
)
def test_cuda_visible_devices_mapping(use_nvml, no_cgroup, cvd, expected):
    rep = _gpus(use_nvml, no_cgroup, cvd)
    assert [g.torch_index for g in rep.gpus] == expected


def test_budget_device_index_must_be_visible(use_nvml, no_cgroup):
    rep = _gpus(use_nvml, no_cgroup, "1")
    assert memory_budget(report=rep, device_index=0).name.startswith("GPU 1")
    with pytest.raises(HardwareError, match="cuda:1"):
        memory_budget(report=rep, device_index=1)


def test_map_without_devices_is_empty():
    assert map_cuda_visible_devices([], "0") == []


# --- cgroup limits ----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_caps_host_ram(tmp_path):
    root = tmp_path / "cg"
    proc = tmp_path / "proc"
    _write(proc, "0::/job/step\n")
    _write(root / "memory.max", "max\n")
    _write(root / "job" / "memory.max", str(4 * GiB))
    _write(root / "job" / "step" / "memory.max", "max\n")
    _write(root / "job" / "step" / "memory.current", str(3 * GiB))
    _write(root / "job" / "step" / "memory.stat", f"anon 1\ninactive_file {1 * GiB}\n")
    cg = read_cgroup_limit(root, proc)
    assert cg is not None and cg.version == 2
    assert cg.limit_bytes == 4 * GiB  # the parent's limit applies to the leaf
    from portllm_edge.hardware.host import HostMemory

    host = HostMemory(physical_total_bytes=64 * GiB, physical_available_bytes=60 * GiB, cgroup=cg)
    assert host.total_bytes == 4 * GiB
    assert host.available_bytes == 2 * GiB  # 4 - (3 - 1 reclaimable)


def test_cgroup_v2_max_means_unlimited(tmp_path):
    _write(tmp_path / "cg" / "memory.max", "max\n")
    _write(tmp_path / "cg" / "memory.current", "100\n")
    cg = read_cgroup_limit(tmp_path / "cg", tmp_path / "missing")
    assert cg is not None and cg.limit_bytes is None


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    root = tmp_path / "cg"
    proc = tmp_path / "proc"
    _write(proc, "4:memory:/docker/abc\n0::/\n")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(2 * GiB))
    _write(root / "memory" / "docker" / "abc" / "memory.usage_in_bytes", str(GiB // 2))
    cg = read_cgroup_limit(root, proc)
    assert cg is not None and (cg.version, cg.limit_bytes, cg.usage_bytes) == (1, 2 * GiB, GiB // 2)
    (root / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert read_cgroup_limit(root, proc).limit_bytes is None  # type: ignore[union-attr]


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert read_cgroup_limit(tmp_path / "nothing", tmp_path / "none") is None


def test_disk_measured_at_nearest_existing_folder(tmp_path):
    d = probe_disk(tmp_path / "not" / "yet" / "there")
    assert d.measured_at == tmp_path
    assert d.free_bytes is not None and 0 < d.free_bytes <= (d.total_bytes or 0)


# --- sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GiB", 8 * GiB),
        ("12GB", 12 * 10**9),
        ("512MiB", 512 * 1024**2),
        ("1.5G", int(1.5 * GiB)),
        ("4096", 4096),
        (" 2 gib ", 2 * GiB),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["-1GiB", "eight", "12XB", "GiB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ConfigError):
        parse_size(bad, field="memory")


def test_format_size_binary_units():
    assert format_size(8 * GiB) == "8.00 GiB"
    assert format_size(1536 * 1024) == "1.50 MiB"
    assert format_size(512) == "512 B"
    assert format_size(None) == "n/a"


# --- import weight and the real command ----------------------------------------------------------


def test_core_imports_do_not_load_torch():
    code = (
        "import sys\n"
        "import portllm_edge.hardware, portllm_edge.planning, portllm_edge.catalog, portllm_edge.cli.hardware_cmds\n"
        "from portllm_edge.hardware import probe\n"
        "from portllm_edge.planning import plan_model\n"
        "probe(); plan_model('Mistral-7B-v0.3', hardware_profile='rtx-3060-12gb')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'textual', 'bitsandbytes') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_probe_command_json_host_within_cgroup(portllm_home):
    out = subprocess.run(
        [sys.executable, "-m", "portllm_edge", "probe", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    host = data["host"]
    assert 0 < host["total_bytes"] <= host["physical_total_bytes"]
    if host["cgroup"] and host["cgroup"]["limit_bytes"]:
        assert host["total_bytes"] <= host["cgroup"]["limit_bytes"]
    assert host["available_bytes"] <= host["total_bytes"]
    assert data["disk"]["free_bytes"] > 0


def test_plan_and_load_share_the_gpu_with_most_free_memory(use_nvml, no_cgroup):
    """The budget plans for the visible GPU with the most free memory; the load goes to that cuda:N."""
    from portllm_edge.planning import decide_precision, load_device

    small = {**RTX3060, "uuid": "GPU-a", "free": 2 * GiB}
    big = {**RTX3060, "uuid": "GPU-b", "free": 11 * GiB}
    use_nvml(fake_nvml([small, big]))
    rep = probe(**no_cgroup)
    budget = memory_budget(report=rep)
    assert budget.torch_index == 1 and budget.load_device == "cuda:1"
    assert load_device(rep) == "cuda:1"
    assert decide_precision(budget=budget).device == "cuda:1"
    assert memory_budget(report=rep, device="cuda:0").available_bytes == 2 * GiB
    assert memory_budget(report=rep, device="cpu").device == "cpu"


def test_gpu_bandwidth_from_nvml_clock_and_bus_width(use_nvml, no_cgroup):
    from portllm_edge.hardware.compute import gpu_bandwidth_bytes_per_s

    lib = fake_nvml([RTX3060])
    lib.nvmlDeviceGetMaxClockInfo = lambda h, kind: 7501 if kind == 2 else 0  # MHz, NVML_CLOCK_MEM
    lib.nvmlDeviceGetMemoryBusWidth = lambda h: 192  # bits
    use_nvml(lib)
    # 2 × 7501 MHz × 24 bytes = 360 GB/s, the RTX 3060's data-sheet figure
    assert gpu_bandwidth_bytes_per_s(0) == 2 * 7501 * 10**6 * 24
    assert memory_budget(report=probe(**no_cgroup)).bandwidth_bytes_per_s == 2 * 7501 * 10**6 * 24


def test_cpu_bf16_from_cpuinfo_flags(tmp_path):
    from portllm_edge.hardware.compute import cpu_bf16_native

    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    without = tmp_path / "b"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert cpu_bf16_native(with_bf16) is True
    assert cpu_bf16_native(without) is False
