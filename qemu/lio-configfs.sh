#!/bin/sh
# Set up the Linux kernel's iSCSI target (LIO) through configfs, with no targetcli.
#
#   lio-configfs.sh serve DEVICE TARGET_IQN INITIATOR_IQN [USER SECRET [TARGET_USER TARGET_SECRET]]
#   lio-configfs.sh clear
#
# serve: first clears what is set up, then serves DEVICE (a block device or a
# file) as a fileio backstore at LUN 0 of TARGET_IQN, portal group 1, on
# 0.0.0.0:3260, to INITIATOR_IQN alone (an ACL of its own: generate_node_acls=0).
# With USER/SECRET the target requires CHAP; with TARGET_USER/TARGET_SECRET it
# also answers mutual CHAP.  The writes come in the order rtslib makes them.
# Needs configfs, target_core_mod, target_core_file and iscsi_target_mod loaded.
# Secrets are written with printf (no newline) and never printed.
set -eu

C=/sys/kernel/config/target

links_out() {
    # the symbolic links of a configfs folder (its attributes are files and stay)
    for entry in "$1"/*; do
        if [ -L "$entry" ]; then rm "$entry"; fi
    done
}

clear_all() {
    for t in "$C"/iscsi/iqn.* "$C"/iscsi/eui.* "$C"/iscsi/naa.*; do
        [ -d "$t" ] || continue
        for tp in "$t"/tpgt_*; do
            [ -d "$tp" ] || continue
            echo 0 > "$tp/enable" 2>/dev/null || true  # ends the sessions of the portal group
            for a in "$tp"/acls/*; do
                [ -d "$a" ] || continue
                for m in "$a"/lun_*; do
                    [ -d "$m" ] || continue
                    links_out "$m"
                    rmdir "$m"
                done
                rmdir "$a"
            done
            for n in "$tp"/np/*; do
                if [ -d "$n" ]; then rmdir "$n"; fi
            done
            for l in "$tp"/lun/lun_*; do
                [ -d "$l" ] || continue
                links_out "$l"
                rmdir "$l"
            done
            rmdir "$tp"
        done
        rmdir "$t"
    done
    for h in "$C"/core/fileio_*; do
        [ -d "$h" ] || continue
        for d in "$h"/*; do
            if [ -d "$d" ]; then rmdir "$d"; fi
        done
        rmdir "$h"
    done
}

serve() {
    device=$1 iqn=$2 initiator=$3
    user=${4:-} secret=${5:-} target_user=${6:-} target_secret=${7:-}
    clear_all
    B=$C/core/fileio_0/disk
    mkdir -p "$B"
    echo "fd_dev_name=$device" > "$B/control"
    echo "$device" > "$B/udev_path"
    echo 1 > "$B/enable"
    T=$C/iscsi/$iqn/tpgt_1
    mkdir -p "$T"
    mkdir "$T/lun/lun_0"
    ln -s "$B" "$T/lun/lun_0/disk"
    mkdir "$T/np/0.0.0.0:3260"
    echo 0 > "$T/attrib/generate_node_acls"
    if [ -n "$user" ]; then
        echo 1 > "$T/attrib/authentication"
    else
        echo 0 > "$T/attrib/authentication"
    fi
    A=$T/acls/$initiator
    mkdir "$A"
    if [ -n "$user" ]; then
        printf '%s' "$user" > "$A/auth/userid"
        printf '%s' "$secret" > "$A/auth/password"
    fi
    if [ -n "$target_user" ]; then
        printf '%s' "$target_user" > "$A/auth/userid_mutual"
        printf '%s' "$target_secret" > "$A/auth/password_mutual"
    fi
    mkdir "$A/lun_0"
    ln -s "$T/lun/lun_0" "$A/lun_0/lun_0"
    echo 1 > "$T/enable"
}

case "${1:-}" in
    serve)
        shift
        [ $# -ge 3 ] || { echo "usage: $0 serve DEVICE TARGET_IQN INITIATOR_IQN [USER SECRET [TARGET_USER TARGET_SECRET]]" >&2; exit 2; }
        serve "$@"
        ;;
    clear) clear_all ;;
    *)
        echo "usage: $0 serve DEVICE TARGET_IQN INITIATOR_IQN [...] | clear" >&2
        exit 2
        ;;
esac
