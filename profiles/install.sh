#!/usr/bin/env bash
# Install a profile of this folder under its name where Snakemake looks profile names up
# ($XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake), so that `snakemake --profile slurm` works
# from any folder. Refuses to replace a profile of that name already there.
#
#   bash profiles/install.sh [NAME]      (default: slurm)
set -euo pipefail
NAME=${1:-slurm}
SOURCE="$(cd "$(dirname "$0")" && pwd)/$NAME"
TARGET="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/$NAME"
[ -f "$SOURCE/config.yaml" ] || { echo "install.sh: no profile $SOURCE/config.yaml" >&2; exit 2; }
[ ! -e "$TARGET" ] || { echo "install.sh: $TARGET exists; edit it, or move it away and run again" >&2; exit 2; }
mkdir -p "$(dirname "$TARGET")"
cp -r "$SOURCE" "$TARGET.tmp.$$" && mv "$TARGET.tmp.$$" "$TARGET"
echo "installed $TARGET: edit its lines marked EDIT, then run \`snakemake --profile $NAME\`"
