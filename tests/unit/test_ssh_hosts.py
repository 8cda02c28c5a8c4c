def test_put_fills_a_private_temporary_file_then_sets_the_mode_and_renames_it():
    from deploysuite.core.ssh import put_argv

    assert put_argv("/srv/tls/privkey.pem", 0o600) == (
        "sh", "-c", 'umask 077 && t=$(mktemp "$1.XXXXXX") && { cat > "$t" && chmod "$2" "$t" && '
        'mv -f "$t" "$1"; } || { rm -f "$t"; exit 1; }', "sh", "/srv/tls/privkey.pem", "0600",
    )  # fmt: skip
    assert put_argv("/srv/x.conf", 0o644)[-1] == "0644"
