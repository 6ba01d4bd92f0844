# shellcheck shell=bash
# Section 4 (list-devices on a big log): written below.
section_listdevices() { not_measured 4-listdevices "4. list-devices" "not written yet"; }
