#!@SHELL@
# udhcpc runs this script with the lease in its environment; it only reports
# (one LEASE|ip|mask|routers|dns|server|rootpath line, read by parse_udhcpc).
case "$1" in bound|renew)
  printf 'LEASE|%s|%s|%s|%s|%s|%s\n' "$ip" "$subnet" "$router" "$dns" "$serverid" "$rootpath";;
esac
exit 0
