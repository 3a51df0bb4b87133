"""The gateway side never needs TensorFlow."""

import subprocess
import sys

BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.') or name == 'keras' or name.startswith('keras.'):
            raise ImportError('TensorFlow is blocked in this test: ' + name)
        return None
sys.meta_path.insert(0, Block())
import pkgutil, importlib
import alanet.device, alanet.firmware_bridge
for pkg in (alanet.device, alanet.firmware_bridge):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
        importlib.import_module(m.name)
import alanet.main
alanet.main.build_parser()
assert not any(k == 'tensorflow' or k.startswith('tensorflow.') for k in sys.modules)
print('ok')
"""


def test_device_and_bridge_import_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", BLOCK_TF], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_help_is_fast_and_tf_free():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "alanet", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "tensorflow" not in out.stderr
