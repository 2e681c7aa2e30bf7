"""The one device resolver (data_tools.devices) that the train command, rsmatch-detect and rsmatch-synthesize share."""
import pytest
import torch

from data_tools.devices import resolve_device
from data_tools.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_is_the_gpu_when_torch_sees_one(a_gpu):
    assert resolve_device("auto") == "cuda"
    assert resolve_device(None) == "cuda"
    assert resolve_device("CPU") == "cpu"
    assert resolve_device("cuda:1", setting="--device", indexed=True) == "cuda:1"


def test_auto_is_the_cpu_without_a_gpu_unless_the_config_asks_for_one(no_gpu):
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match=r"device: auto found no CUDA GPU .*\(gpu: 0\).*'device: cpu'"):
        resolve_device("auto", gpu_request=["gpu: 0"])


@pytest.mark.parametrize("setting, fix", [("device", "'device: cpu' (or 'auto')"),
                                          ("--device", "--device cpu (or auto)")])
def test_a_missing_gpu_names_the_setting_and_the_fix(no_gpu, setting, fix):
    with pytest.raises(UserError) as exc:
        resolve_device("cuda", setting=setting)
    message = str(exc.value)
    assert message.startswith(f"{setting}: cuda was requested but no CUDA GPU is visible") and fix in message


@pytest.mark.parametrize("value", ["tpu", "mps", "cuda:0", "cuda:", "", "gpu"])
def test_an_unknown_device_is_one_line_naming_the_choices(a_gpu, value):
    if value == "":  # empty means the default, auto
        assert resolve_device(value) == "cuda"
        return
    with pytest.raises(UserError, match=r"is not one of auto, cpu, cuda; fix the 'device' key"):
        resolve_device(value)
    message = "is not one of auto, cpu, cuda, cuda:N; give --device one of them"
    if value != "cuda:0":
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            resolve_device(value, setting="--device", indexed=True)
