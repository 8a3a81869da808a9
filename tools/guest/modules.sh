# Shared by tools/guest/build.sh and tools/guest/build-disk.sh (sourced, not run): which Debian
# kernel the guests use, whether a build's outputs are current, and the kernel modules (with their
# dependencies, in load order) copied into an initramfs. Needs KVER and MODDIR set for the module
# functions, HERE (tools/guest) and OUT for up_to_date.

# OUT/guest.env is the stamp: every output exists, it names KVER, and it is newer than every file
# in tools/guest/. Takes the output names.
up_to_date() {
  local f
  for f in "$@"; do [[ -f $OUT/$f ]] || return 1; done
  grep -qx "KERNEL=$KVER" "$OUT/guest.env" || return 1
  for f in "$HERE"/*; do [[ $f -ot $OUT/guest.env ]] || return 1; done
  return 0
}

pick_kernel() {
  if [[ -n ${REBOUND_GUEST_KERNEL:-} ]]; then echo "$REBOUND_GUEST_KERNEL"; return; fi
  local v best="" best_cloud=""
  for f in /boot/vmlinuz-*; do
    [[ -e $f ]] || continue
    v=${f#/boot/vmlinuz-}
    [[ -f /lib/modules/$v/modules.dep ]] || continue
    best=$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -n1)
    [[ $v == *-cloud-amd64 ]] && best_cloud=$(printf '%s\n%s\n' "$best_cloud" "$v" | sed '/^$/d' | sort -V | tail -n1)
  done
  echo "${best_cloud:-$best}"
}

declare -A LOADED=()
ORDER=()
is_builtin() { grep -q "/$1.ko\$" "$MODDIR/modules.builtin"; }
dep_path() { # module name -> path relative to MODDIR (as in modules.dep), or nothing
  local n=$1 alt=${1//_/-}
  grep -E "^(.*/)?($n|$alt)\\.ko(\\.(xz|zst|gz))?:" "$MODDIR/modules.dep" | head -n1 | cut -d: -f1
}
add_module() { # path relative to MODDIR; dependencies first
  local p=$1 d
  [[ -n ${LOADED[$p]:-} ]] && return
  LOADED[$p]=1
  for d in $(grep -E "^$p:" "$MODDIR/modules.dep" | cut -d: -f2-); do add_module "$d"; done
  ORDER+=("$p")
}
collect_modules() { # MODULE... -> ORDER (paths); optional soft dependencies may be missing
  local m p
  for m in "$@"; do
    if is_builtin "$m"; then continue; fi
    p=$(dep_path "$m")
    if [[ -z $p ]]; then
      [[ $m == crc32c_generic ]] && continue # only a soft dependency of ext4; some kernels build it in
      die "module $m is neither built into $KVER nor in $MODDIR/modules.dep"
    fi
    add_module "$p"
  done
}
install_modules() { # ROOT: copies ORDER (decompressed) into ROOT/lib/modules and lists them in load.list
  local root=$1 p name
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/load.list"
  for p in "${ORDER[@]}"; do
    name=$(basename "$p")
    case $name in
      *.ko) cp "$MODDIR/$p" "$root/lib/modules/$name" ;;
      *.ko.xz) xz -dc "$MODDIR/$p" >"$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -qdc "$MODDIR/$p" >"$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *.ko.gz) gzip -dc "$MODDIR/$p" >"$root/lib/modules/${name%.gz}"; name=${name%.gz} ;;
      *) die "unexpected module file $p" ;;
    esac
    echo "$name" >>"$root/lib/modules/load.list"
  done
}
