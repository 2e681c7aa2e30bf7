"""USB-style RSMatch configs, derived from the committed table of USB's FixMatch classic-CV configs.

USB ships one YAML per classic-CV setting for FixMatch
(``config/classic_cv/fixmatch/fixmatch_<dataset>_<labels>_<seed>.yaml``).
Configs cannot be downloaded at export time, so their keys and values are
kept in ``usb_fixmatch_classic_cv.csv`` next to this module: one row per
file, one column per key, each cell the value's text as USB writes it. The
table's header comments name the USB commit it was read from; rebuild it
from a USB checkout with ``python -m rsmatch_usb.upstream.usb_configs
--usb-checkout PATH``.

An RSMatch config is its FixMatch row with ``algorithm``, ``save_name`` and
``load_path`` renamed, plus the RSMatch settings of
:data:`.manifest.CONFIG_SETTINGS` whose values differ from RSMatch's defaults,
placed after FixMatch's algorithm keys. Keys at their defaults are left out:
``get_argument()`` supplies them, as for USB's other algorithms.
"""
import argparse
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

from data_tools.config_files import parse_yaml
from rsmatch_usb.errors import UserError, report

TABLE = Path(__file__).with_name("usb_fixmatch_classic_cv.csv")
USB_CONFIG_DIR = "config/classic_cv/fixmatch"
EXPORT_CONFIG_DIR = "config/classic_cv/rsmatch"
_LINE = re.compile(r"^([A-Za-z_][\w-]*):\s*(.*?)\s*$")
_RENAMED = ("save_name", "load_path")


# ---------------------------------------------------------------- the table
def read_usb_config(path):
    """``[(key, value text)]`` of a flat USB config file, in file order."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise UserError(f"{path}:{number}: not a flat 'key: value' line; USB's classic-CV configs are flat")
        items.append(match.groups())
    return items


def build_table(usb_checkout, commit):
    """The table's text from the FixMatch configs of a USB checkout at ``commit``."""
    files = sorted(Path(usb_checkout, USB_CONFIG_DIR).glob("fixmatch_*.yaml"))
    if not files:
        raise UserError(f"{Path(usb_checkout, USB_CONFIG_DIR)} holds no fixmatch_*.yaml; "
                        "point --usb-checkout at a clone of microsoft/Semi-supervised-learning")
    configs = {f.name: read_usb_config(f) for f in files}
    keys = [k for k, _ in next(iter(configs.values()))]
    for name, items in configs.items():
        if [k for k, _ in items] != keys:
            raise UserError(f"{name} has other keys (or another order) than {files[0].name}; "
                            "the table assumes one key list for all FixMatch configs")
    out = io.StringIO()
    out.write(f"# USB's FixMatch classic-CV configs: {USB_CONFIG_DIR}/*.yaml of "
              f"github.com/microsoft/Semi-supervised-learning at commit {commit}.\n"
              "# Each cell is the value's text as written in the YAML file. Regenerate with:\n"
              "# python -m rsmatch_usb.upstream.usb_configs --usb-checkout PATH\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file"] + keys)
    for name, items in configs.items():
        writer.writerow([name] + [v for _, v in items])
    return out.getvalue()


def read_table(path=TABLE):
    """``{file name: [(key, value text)]}`` from the table, in its row and column order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(line for line in f if not line.startswith("#")))
    header, rows = rows[0], rows[1:]
    if header[0] != "file":
        raise ValueError(f"{path}: the first column must be 'file'")
    return {row[0]: list(zip(header[1:], row[1:])) for row in rows}


# ---------------------------------------------------------------- RSMatch configs
def yaml_scalar(value):
    """``value`` as USB writes it in a config (True/False, plain numbers and words), quoted only if needed."""
    text = str(value) if isinstance(value, (bool, int, float, str)) else None
    if text is None:
        raise TypeError(f"cannot write {value!r} as a config value")
    if parse_yaml(f"k: {text}")["k"] != value:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def own_settings(settings, defaults, diagnostic=()):
    """``[(key, value text)]`` of ``settings`` whose values differ from ``defaults`` (RSMatch's keys).

    A key RSMatch does not have, or one in ``diagnostic``, is an error: the
    exported configs train, they do not analyse.
    """
    own = []
    for key, value in settings.items():
        if key in diagnostic:
            raise ValueError(f"config setting {key!r} is a diagnostic key; exported configs leave it out")
        if key not in defaults:
            raise ValueError(f"config setting {key!r} is not an argument of RSMatch")
        if value != defaults[key]:
            own.append((key, yaml_scalar(value)))
    return own


def rsmatch_config(fixmatch_name, items, own, fixmatch_keys):
    """``(file name, YAML text)`` of the RSMatch config for one FixMatch config of the table.

    ``own`` are RSMatch's ``[(key, value text)]`` (:func:`own_settings`);
    ``fixmatch_keys`` the names of FixMatch's own keys, after which they are placed.
    """
    setting = fixmatch_name[len("fixmatch_"):-len(".yaml")]
    name = f"rsmatch_{setting}.yaml"
    items = [(k, v) for k, v in items]
    keys = [k for k, _ in items]
    values = dict(items)
    if values.get("algorithm") != "fixmatch":
        raise ValueError(f"{fixmatch_name}: algorithm is {values.get('algorithm')!r}, not fixmatch")
    for i, (key, value) in enumerate(items):
        if key == "algorithm":
            items[i] = (key, "rsmatch")
        elif key in _RENAMED:
            items[i] = (key, value.replace(f"fixmatch_{setting}", f"rsmatch_{setting}"))
        elif "fixmatch" in value:
            raise ValueError(f"{fixmatch_name}: {key}: {value} names fixmatch; teach rsmatch_config to rename it")
    clash = [k for k, _ in own if k in values]
    if clash:
        raise ValueError(f"{fixmatch_name} already sets {', '.join(clash)}; RSMatch's settings may not change them")
    at = max((keys.index(k) for k in fixmatch_keys if k in keys), default=len(keys) - 1) + 1
    items[at:at] = own
    return name, "".join(f"{k}: {v}\n" for k, v in items)


def rsmatch_configs(own, fixmatch_arguments, table=TABLE):
    """``{relative path: YAML text}`` of every RSMatch config, one per FixMatch config in the table."""
    fixmatch_keys = [a.name.lstrip("-") for a in fixmatch_arguments]
    out = {}
    for fixmatch_name, items in read_table(table).items():
        name, text = rsmatch_config(fixmatch_name, items, own, fixmatch_keys)
        out[f"{EXPORT_CONFIG_DIR}/{name}"] = text
    return out


def cli(argv=None):
    """Rebuild the committed table from a USB checkout."""
    parser = argparse.ArgumentParser(prog="python -m rsmatch_usb.upstream.usb_configs", description=cli.__doc__)
    parser.add_argument("--usb-checkout", required=True, help="a clone of microsoft/Semi-supervised-learning")
    parser.add_argument("--commit", help="the checkout's commit (default: git rev-parse HEAD in it)")
    parser.add_argument("--out", default=str(TABLE), help="where to write the table (default: the committed one)")
    args = parser.parse_args(argv)
    try:
        commit = args.commit
        if not commit:
            done = subprocess.run(["git", "-C", args.usb_checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
            if done.returncode:
                raise UserError(f"{args.usb_checkout} is not a git checkout; pass --commit SHA")
            commit = done.stdout.strip()
        text = build_table(args.usb_checkout, commit)
    except UserError as exc:
        return report(exc, "usb_configs")
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
