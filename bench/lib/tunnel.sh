# shellcheck shell=bash
# Sections 5 and 6: written below.
section_tunnels() {
	not_measured 5-latency "5. Request to tunnel" "not written yet"
	not_measured 6-tunnels "6. Many tunnels" "not written yet"
}
