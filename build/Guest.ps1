# Guest assets: the kernel and initramfs that every Microsandbox microVM boots, and rootfs.tar, the
# built-in default image as a single layer (the engine turns it into an EROFS image like any OCI layer).
# Dot-sourced by build.ps1; defines Build-GuestAssets and Guest*-prefixed helpers (the prefix keeps them
# from colliding with other build scripts dot-sourced into the same scope).
#
# Initramfs layout:
#   /init                          the guest agent (PID 1), plus its ldd libraries at their own paths
#   /lib/modules/<kver>/...        kernel modules, decompressed so the agent can finit_module() them
#   /etc/msb/modules               module paths, one per line, in load order (dependencies first)
#   /rootfs                        empty: where the agent assembles the sandbox root
#   /dev/console, /dev/null        static nodes, so PID 1 has a console before devtmpfs is mounted
#   /proc /sys /newroot            mount points for the agent

# Modules the guest needs, in the order we want them considered. Load order is still derived from
# dependencies. crc32c_generic comes first on purpose: libcrc32c (erofs, nf_tables) and ext4 ask the
# crypto API for "crc32c" at init/mount time, which ends in request_module(); the guest has no modprobe,
# so the provider must already be loaded. Soft dependencies are also resolved below, this just makes
# the intent explicit.
$script:GuestRequiredModules = @(
    'crc32c_generic', 'virtio', 'virtio_ring', 'virtio_mmio', 'virtio_console', 'virtio_blk',
    'virtio_net', '9p', '9pnet_virtio', 'overlay', 'erofs', 'ext4', 'vsock', 'vmw_vsock_virtio_transport'
)
# Nice to have; silently skipped when the kernel has neither module nor built-in.
$script:GuestOptionalModules = @('af_packet', 'nf_tables')

function Invoke-GuestNative {
    # Runs a native tool, returns its stdout lines and turns a non-zero exit into a terminating error
    # that carries the tool's stderr (PowerShell would otherwise just carry on).
    # With -AllowFailure it returns an object with ExitCode, Output (stdout lines) and Error (stderr) so
    # the caller can decide what a failure means.
    param(
        [Parameter(Mandatory)][string] $FilePath,
        [string[]] $ArgumentList = @(),
        [switch] $AllowFailure
    )
    # build.ps1 may opt into native-command errors; this helper reports failures itself, with stderr.
    $PSNativeCommandUseErrorActionPreference = $false
    $output = & $FilePath @ArgumentList 2>&1
    $exit = $LASTEXITCODE
    $stdout = @($output | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] } |
        ForEach-Object { [string]$_ })
    $stderr = ($output | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] }) -join "`n"
    if ($AllowFailure) {
        return [pscustomobject]@{ ExitCode = $exit; Output = $stdout; Error = $stderr }
    }
    if ($exit -ne 0) {
        throw "'$FilePath $($ArgumentList -join ' ')' failed with exit code ${exit}: $stderr"
    }
    return , $stdout
}

function Assert-GuestTool {
    param([Parameter(Mandatory)][string] $Name, [Parameter(Mandatory)][string] $Package)
    if (-not (Get-Command -Name $Name -CommandType Application -ErrorAction SilentlyContinue)) {
        throw "Building guest assets needs '$Name', which is not on PATH. " +
            "Install it with: apt-get install $Package (Debian/Ubuntu host required)."
    }
}

function New-GuestDirectory {
    param([Parameter(Mandatory)][string] $Path, [System.IO.UnixFileMode] $Mode = 493) # 493 = 0755
    $null = [System.IO.Directory]::CreateDirectory($Path)
    # Set explicitly: the process umask must not leak into the archive.
    [System.IO.File]::SetUnixFileMode($Path, $Mode)
}

function Write-GuestTextFile {
    param([Parameter(Mandatory)][string] $Path, [Parameter(Mandatory)][AllowEmptyString()][string] $Text)
    New-GuestDirectory -Path ([System.IO.Path]::GetDirectoryName($Path))
    # LF endings and no BOM: the guest reads these with plain libc/busybox code.
    $utf8 = [System.Text.UTF8Encoding]::new($false)
    [System.IO.File]::WriteAllText($Path, $Text.Replace("`r`n", "`n"), $utf8)
    [System.IO.File]::SetUnixFileMode($Path, 420) # 0644
}

function Copy-GuestFile {
    # File.Copy reads through symlinks, so a soname symlink on the host becomes a regular file here.
    param(
        [Parameter(Mandatory)][string] $Source,
        [Parameter(Mandatory)][string] $Destination,
        [System.IO.UnixFileMode] $Mode = 420
    )
    New-GuestDirectory -Path ([System.IO.Path]::GetDirectoryName($Destination))
    [System.IO.File]::Copy($Source, $Destination, $true)
    [System.IO.File]::SetUnixFileMode($Destination, $Mode)
}

function Get-GuestFileSha256 {
    param([Parameter(Mandatory)][string] $Path)
    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

function Get-GuestAptRecords {
    # One apt-cache run for several packages: loading apt's cache is most of the cost of a no-op build.
    param([Parameter(Mandatory)][string[]] $Packages)
    $result = Invoke-GuestNative apt-cache (@('show', '--no-all-versions') + $Packages) -AllowFailure
    $records = @{}
    $current = $null
    foreach ($line in $result.Output) {
        if ($line -match '^Package:\s*(\S+)') {
            $current = @{}
            $records[$Matches[1]] = $current
        } elseif ($null -ne $current -and $line -match '^(Version|Depends):\s*(.*)$') {
            $current[$Matches[1]] = $Matches[2].Trim()
        }
    }
    return $records
}

function Resolve-GuestPackages {
    # Returns the concrete kernel package and the busybox-static version apt would install now.
    # The linux-image-amd64 metapackage pins the current ABI package with "(= version)"; the -cloud-
    # flavour is avoided because it is built without 9p.
    $pattern = '^linux-image-6\.1\.0-(\d+)-amd64$'
    $records = Get-GuestAptRecords -Packages @('linux-image-amd64', 'busybox-static')
    if (-not $records.ContainsKey('busybox-static')) {
        throw "apt-cache knows no installable busybox-static. Run 'apt-get update' and retry."
    }
    $kernel = $null
    $kernelVersion = $null
    if ($records.ContainsKey('linux-image-amd64') -and $records['linux-image-amd64'].ContainsKey('Depends')) {
        foreach ($dep in $records['linux-image-amd64']['Depends'].Split(',')) {
            if ($dep.Trim() -notmatch '^(\S+)(\s*\(=\s*([^)]+)\))?') { continue }
            $name, $pinned = $Matches[1], $Matches[3]
            if ($name -match $pattern) {
                $kernel = $name
                $kernelVersion = if ($pinned) { $pinned.Trim() }
                break
            }
        }
    }
    if (-not $kernel) {
        $found = Invoke-GuestNative apt-cache @('search', '--names-only', 'linux-image-6\.1\.0-[0-9]+-amd64$')
        $kernel = $found | ForEach-Object { ($_ -split ' ', 2)[0] } | Where-Object { $_ -match $pattern } |
            Sort-Object { [int]([regex]::Match($_, $pattern).Groups[1].Value) } | Select-Object -Last 1
    }
    if (-not $kernel) {
        throw 'No linux-image-6.1.0-*-amd64 package is known to apt. On a Debian 12 host run ' +
            "'apt-get update' and retry."
    }
    if (-not $kernelVersion) {
        $kernelRecords = Get-GuestAptRecords -Packages @($kernel)
        if (-not $kernelRecords.ContainsKey($kernel)) { throw "apt-cache knows no installable $kernel." }
        $kernelVersion = $kernelRecords[$kernel]['Version']
    }
    return [pscustomobject]@{
        KernelPackage  = $kernel
        KernelVersion  = $kernelVersion
        BusyboxVersion = $records['busybox-static']['Version']
    }
}

function Get-GuestDeb {
    # Downloads a package once per version into the cache; later builds reuse the .deb.
    param(
        [Parameter(Mandatory)][string] $Package,
        [Parameter(Mandatory)][string] $Version,
        [Parameter(Mandatory)][string] $CacheDir
    )
    $safeVersion = $Version -replace '[^A-Za-z0-9.+~-]', '_'
    $target = [System.IO.Path]::Combine($CacheDir, 'debs', "${Package}_${safeVersion}_amd64.deb")
    if ([System.IO.File]::Exists($target)) {
        Write-Verbose "Using cached $Package $Version"
        return $target
    }
    Write-Verbose "Downloading $Package=$Version"
    $tmp = [System.IO.Path]::Combine($CacheDir, 'debs', ".download-$([guid]::NewGuid().ToString('N'))")
    New-GuestDirectory -Path $tmp
    Push-Location -LiteralPath $tmp
    try {
        # apt drops privileges to _apt for downloads, which cannot write into a root-owned cache dir.
        $null = Invoke-GuestNative apt-get @('-q', '-o', 'APT::Sandbox::User=root', 'download',
            "$Package=$Version")
    } finally {
        Pop-Location
    }
    $debs = @([System.IO.Directory]::GetFiles($tmp, '*.deb'))
    if ($debs.Count -ne 1) {
        throw "apt-get download $Package=$Version produced $($debs.Count) .deb files in $tmp, expected one."
    }
    # Rename on the same filesystem, so a cached .deb is always complete.
    [System.IO.File]::Move($debs[0], $target, $true)
    [System.IO.Directory]::Delete($tmp, $true)
    return $target
}

function Expand-GuestDeb {
    param([Parameter(Mandatory)][string] $Deb, [Parameter(Mandatory)][string] $Destination)
    New-GuestDirectory -Path $Destination
    $null = Invoke-GuestNative dpkg-deb @('-x', $Deb, $Destination)
}

function Export-GuestPvhKernel {
    # Turns the bzImage into the plain vmlinux ELF. QEMU boots that ELF through its PVH entry point, which
    # skips the kernel's XZ self-decompression: under TCG that alone took 3.5-4 s of a 6-7 s boot.
    param([Parameter(Mandatory)][string] $BzImage, [Parameter(Mandatory)][string] $Destination)
    $bytes = [System.IO.File]::ReadAllBytes($BzImage)
    # x86 boot protocol >= 2.08: payload_offset/payload_length locate the compressed kernel.
    if ($bytes.Length -lt 0x250 -or [System.Text.Encoding]::ASCII.GetString($bytes, 0x202, 4) -ne 'HdrS' -or
        [System.BitConverter]::ToUInt16($bytes, 0x206) -lt 0x208) {
        throw "$BzImage is not a bzImage with boot protocol 2.08 or later."
    }
    $setupSects = if ($bytes[0x1F1] -eq 0) { 4 } else { $bytes[0x1F1] }
    $payloadStart = ($setupSects + 1) * 512 + [System.BitConverter]::ToUInt32($bytes, 0x248)
    $payloadLength = [System.BitConverter]::ToUInt32($bytes, 0x24C)
    if ($payloadStart + $payloadLength -gt $bytes.Length -or $payloadLength -lt 6 -or
        $bytes[$payloadStart] -ne 0xFD -or
        [System.Text.Encoding]::ASCII.GetString($bytes, $payloadStart + 1, 4) -ne '7zXZ') {
        throw "$BzImage does not carry an XZ-compressed payload; only XZ (Debian's choice) is supported."
    }
    Assert-GuestTool -Name xz -Package xz-utils
    $payload = "$Destination.xz"
    $stream = [System.IO.File]::Create($payload)
    try { $stream.Write($bytes, $payloadStart, $payloadLength) } finally { $stream.Dispose() }
    try {
        # --single-stream: the payload ends with the 4-byte uncompressed size, which is not XZ data.
        $null = Invoke-GuestNative sh @('-c', 'xz -d -c -q --single-stream -- "$0" > "$1"', $payload,
            $Destination)
    } finally {
        [System.IO.File]::Delete($payload)
    }
    $elf = [System.IO.File]::ReadAllBytes($Destination)
    if (-not (Test-GuestPvhNote -Elf $elf)) {
        throw "The kernel in $BzImage has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); " +
            'it must be built with CONFIG_PVH=y.'
    }
    [System.IO.File]::SetUnixFileMode($Destination, 420)
}

function Test-GuestPvhNote {
    # QEMU only boots an ELF kernel directly when it finds this note; otherwise it would fail at start time.
    param([Parameter(Mandatory)][byte[]] $Elf)
    if ($Elf.Length -lt 64 -or $Elf[0] -ne 0x7f -or $Elf[4] -ne 2 -or
        [System.Text.Encoding]::ASCII.GetString($Elf, 1, 3) -ne 'ELF') {
        return $false
    }
    $phoff = [System.BitConverter]::ToInt64($Elf, 0x20)
    $phentsize = [System.BitConverter]::ToUInt16($Elf, 0x36)
    $phnum = [System.BitConverter]::ToUInt16($Elf, 0x38)
    for ($i = 0; $i -lt $phnum; $i++) {
        $ph = $phoff + $i * $phentsize
        if ([System.BitConverter]::ToUInt32($Elf, $ph) -ne 4) { continue } # PT_NOTE
        $pos = [System.BitConverter]::ToInt64($Elf, $ph + 8)
        $end = $pos + [System.BitConverter]::ToInt64($Elf, $ph + 32)
        while ($pos + 12 -le $end) {
            $namesz = [System.BitConverter]::ToUInt32($Elf, $pos)
            $descsz = [System.BitConverter]::ToUInt32($Elf, $pos + 4)
            $type = [System.BitConverter]::ToUInt32($Elf, $pos + 8)
            $name = [System.Text.Encoding]::ASCII.GetString($Elf, $pos + 12, [Math]::Max(0, $namesz - 1))
            if ($name -eq 'Xen' -and $type -eq 18) { return $true } # XEN_ELFNOTE_PHYS32_ENTRY
            $pos += 12 + (($namesz + 3) -band -bnot 3) + (($descsz + 3) -band -bnot 3)
        }
    }
    return $false
}

function Get-GuestModInfo {
    # Reads the .modinfo ELF section (NUL-separated key=value strings). Debian's kernel .deb ships no
    # modules.dep (depmod runs in its postinst) and the host may lack kmod, so dependencies come from
    # here: the same data depmod itself reads.
    param([Parameter(Mandatory)][byte[]] $Bytes, [string] $Name = 'module')
    if ($Bytes.Length -lt 64 -or $Bytes[0] -ne 0x7f -or $Bytes[1] -ne 0x45 -or $Bytes[4] -ne 2 -or
        $Bytes[5] -ne 1) {
        throw "$Name is not a little-endian ELF64 kernel module."
    }
    $shoff = [System.BitConverter]::ToInt64($Bytes, 0x28)
    $shentsize = [System.BitConverter]::ToUInt16($Bytes, 0x3A)
    $shnum = [System.BitConverter]::ToUInt16($Bytes, 0x3C)
    $shstrndx = [System.BitConverter]::ToUInt16($Bytes, 0x3E)
    $strtab = [System.BitConverter]::ToInt64($Bytes, $shoff + $shstrndx * $shentsize + 24)
    $info = @{ depends = @(); softdep = @(); alias = @() }
    for ($i = 0; $i -lt $shnum; $i++) {
        $hdr = $shoff + $i * $shentsize
        $nameOff = $strtab + [System.BitConverter]::ToUInt32($Bytes, $hdr)
        $nameEnd = [System.Array]::IndexOf($Bytes, [byte]0, [int]$nameOff)
        $secName = [System.Text.Encoding]::ASCII.GetString($Bytes, $nameOff, $nameEnd - $nameOff)
        if ($secName -ne '.modinfo') { continue }
        $off = [System.BitConverter]::ToInt64($Bytes, $hdr + 24)
        $size = [System.BitConverter]::ToInt64($Bytes, $hdr + 32)
        $text = [System.Text.Encoding]::UTF8.GetString($Bytes, $off, $size)
        foreach ($entry in $text.Split([char]0, [System.StringSplitOptions]::RemoveEmptyEntries)) {
            $key, $value = $entry.Split('=', 2)
            if ($key -eq 'depends' -and $value) {
                $info.depends += $value.Split(',', [System.StringSplitOptions]::RemoveEmptyEntries)
            } elseif ($key -eq 'softdep' -and $value) {
                $info.softdep += $value
            } elseif ($key -eq 'alias' -and $value) {
                $info.alias += $value
            }
        }
        return $info
    }
    throw "$Name has no .modinfo section."
}

function Read-GuestModuleBytes {
    # Compressed modules are expanded here so the agent can hand the file straight to finit_module()
    # without needing in-kernel decompression support.
    param([Parameter(Mandatory)][string] $Path)
    if ($Path.EndsWith('.ko')) { return , [System.IO.File]::ReadAllBytes($Path) }
    if ($Path.EndsWith('.ko.gz')) {
        $in = [System.IO.File]::OpenRead($Path)
        try {
            $mode = [System.IO.Compression.CompressionMode]::Decompress
            $gz = [System.IO.Compression.GZipStream]::new($in, $mode)
            $out = [System.IO.MemoryStream]::new()
            $gz.CopyTo($out)
            $gz.Dispose()
            return , $out.ToArray()
        } finally {
            $in.Dispose()
        }
    }
    $tool = if ($Path.EndsWith('.ko.xz')) { 'xz', 'xz-utils' }
    elseif ($Path.EndsWith('.ko.zst')) { 'zstd', 'zstd' }
    if (-not $tool) { throw "Unknown kernel module format: $Path" }
    Assert-GuestTool -Name $tool[0] -Package $tool[1]
    $tmp = [System.IO.Path]::GetTempFileName()
    try {
        # Through sh: both tools write to stdout, and PowerShell pipes would re-encode the bytes.
        $null = Invoke-GuestNative sh @('-c', '"$0" -d -c -- "$1" > "$2"', $tool[0], $Path, $tmp)
        return , [System.IO.File]::ReadAllBytes($tmp)
    } finally {
        [System.IO.File]::Delete($tmp)
    }
}

function Remove-GuestModuleSignature {
    # Drops the appended PKCS#7 signature. The kernel then skips the RSA check that, under TCG, made
    # loading the 26 modules take ~1.8 s instead of ~1.0 s. Checking it buys nothing here: whoever can
    # alter the initramfs already controls the guest. Only done when the kernel does not force signatures.
    param([Parameter(Mandatory)][byte[]] $Bytes)
    $magic = [System.Text.Encoding]::ASCII.GetBytes("~Module signature appended~`n")
    # struct module_signature (12 bytes) precedes the magic; its last field is the big-endian sig_len.
    if ($Bytes.Length -lt $magic.Length + 12) { return , $Bytes }
    $tail = $Bytes.Length - $magic.Length
    for ($i = 0; $i -lt $magic.Length; $i++) {
        if ($Bytes[$tail + $i] -ne $magic[$i]) { return , $Bytes }
    }
    $sigLen = ([uint32]$Bytes[$tail - 4] -shl 24) -bor ([uint32]$Bytes[$tail - 3] -shl 16) -bor
        ([uint32]$Bytes[$tail - 2] -shl 8) -bor [uint32]$Bytes[$tail - 1]
    $keep = $tail - 12 - $sigLen
    if ($keep -le 0) { throw 'Malformed module signature trailer.' }
    $stripped = [byte[]]::new($keep)
    [System.Array]::Copy($Bytes, $stripped, $keep)
    return , $stripped
}

function Get-GuestModulePlan {
    # Returns the modules to ship in load order: a depth-first walk emits every dependency before its
    # user, and each module once.
    param([Parameter(Mandatory)][string] $ModulesRoot)
    $normalize = { param($n) $n.Trim().Replace('-', '_') }
    $builtin = [System.Collections.Generic.HashSet[string]]::new()
    $builtinFile = [System.IO.Path]::Combine($ModulesRoot, 'modules.builtin')
    if ([System.IO.File]::Exists($builtinFile)) {
        foreach ($line in [System.IO.File]::ReadAllLines($builtinFile)) {
            if ($line -match '([^/]+)\.ko$') { $null = $builtin.Add((& $normalize $Matches[1])) }
        }
    }
    $index = @{}
    $kernelDir = [System.IO.Path]::Combine($ModulesRoot, 'kernel')
    foreach ($file in [System.IO.Directory]::EnumerateFiles($kernelDir, '*.ko*', 'AllDirectories')) {
        if ($file -match '/([^/]+)\.ko(\.(xz|zst|gz))?$') { $index[(& $normalize $Matches[1])] = $file }
    }
    $aliases = @{}
    $aliasScan = @{ Done = $false }
    $infoCache = @{}
    $getInfo = {
        param($mod)
        if (-not $infoCache.ContainsKey($mod)) {
            $bytes = Read-GuestModuleBytes -Path $index[$mod]
            $infoCache[$mod] = @{ Bytes = $bytes; Info = (Get-GuestModInfo -Bytes $bytes -Name $index[$mod]) }
        }
        return $infoCache[$mod]
    }
    $resolveSoft = {
        # Soft dependencies name aliases such as "crypto-crc32c". Only crypto providers are looked
        # up: that is where softdep aliases point, and scanning 4000 modules would cost seconds.
        param($name)
        $asModule = & $normalize $name
        if ($index.ContainsKey($asModule) -or $builtin.Contains($asModule)) { return $asModule }
        if (-not $aliasScan.Done) {
            $cryptoModules = @($index.Keys | Where-Object { $index[$_] -like '*/kernel/crypto/*' } |
                Sort-Object)
            foreach ($mod in $cryptoModules) {
                foreach ($a in (& $getInfo $mod).Info.alias) {
                    if (-not $aliases.ContainsKey($a)) { $aliases[$a] = $mod }
                }
            }
            $aliasScan.Done = $true
        }
        return $aliases[$name]
    }
    $order = [System.Collections.Generic.List[string]]::new()
    $state = @{}
    $visit = {
        param($mod, $chain)
        if ($state[$mod] -eq 'done') { return }
        if ($state[$mod] -eq 'active') { throw "Kernel module dependency cycle: $chain -> $mod" }
        $state[$mod] = 'active'
        $info = (& $getInfo $mod).Info
        $deps = [System.Collections.Generic.List[string]]::new()
        foreach ($soft in $info.softdep) {
            # "pre: a b post: c": only pre-dependencies must be loaded first.
            $inPre = $false
            foreach ($tok in $soft.Split(' ', [System.StringSplitOptions]::RemoveEmptyEntries)) {
                if ($tok.EndsWith(':')) { $inPre = $tok -eq 'pre:'; continue }
                if (-not $inPre) { continue }
                $target = & $resolveSoft $tok
                if ($target) { $deps.Add($target) }
                else { Write-Verbose "  $mod soft dependency $tok not found, skipped" }
            }
        }
        foreach ($d in $info.depends) { $deps.Add((& $normalize $d)) }
        foreach ($dep in $deps) {
            if ($builtin.Contains($dep)) { continue }
            if (-not $index.ContainsKey($dep)) {
                throw "Kernel module $mod depends on '$dep', which is neither a module nor built in."
            }
            & $visit $dep "$chain -> $mod"
        }
        $state[$mod] = 'done'
        $order.Add($mod)
    }
    $builtinUsed = [System.Collections.Generic.List[string]]::new()
    foreach ($mod in $script:GuestRequiredModules + $script:GuestOptionalModules) {
        $required = $script:GuestRequiredModules -contains $mod
        if ($builtin.Contains($mod)) { $builtinUsed.Add($mod); continue }
        if (-not $index.ContainsKey($mod)) {
            if ($required) { throw "Kernel module '$mod' is missing: neither a module nor built in." }
            Write-Verbose "  optional module $mod not available, skipped"
            continue
        }
        & $visit $mod 'wanted'
    }
    return [pscustomobject]@{
        Order   = @($order | ForEach-Object {
                [pscustomobject]@{ Name = $_; Source = $index[$_]; Bytes = $infoCache[$_].Bytes }
            })
        Builtin = @($builtinUsed)
    }
}

function Get-GuestSharedLibraries {
    # The agent is expected to be dynamically linked against glibc; ldd gives the exact paths its loader
    # will search, including the interpreter itself.
    param([Parameter(Mandatory)][string] $Path)
    $head = [byte[]]::new(4)
    $fs = [System.IO.File]::OpenRead($Path)
    try { $null = $fs.Read($head, 0, 4) } finally { $fs.Dispose() }
    if ($head[0] -ne 0x7f -or $head[1] -ne 0x45 -or $head[2] -ne 0x4c -or $head[3] -ne 0x46) {
        Write-Verbose 'Agent is not an ELF binary (script?); no libraries to copy'
        return @()
    }
    Assert-GuestTool -Name ldd -Package libc-bin
    $ldd = Invoke-GuestNative ldd @($Path) -AllowFailure
    if ($ldd.ExitCode -ne 0) {
        if ("$($ldd.Output -join "`n") $($ldd.Error)" -match 'not a dynamic executable|statically linked') {
            return @()
        }
        throw "ldd $Path failed: $($ldd.Error)"
    }
    $libs = foreach ($line in $ldd.Output) {
        if ($line -match 'statically linked') { continue }
        if ($line -match '=>\s*not found') { throw "Agent library missing on this host: $($line.Trim())" }
        if ($line -match '=>\s*(/\S+)\s+\(') { $Matches[1] }
        elseif ($line -match '^\s*(/\S+)\s+\(') { $Matches[1] }
        # linux-vdso.so.1 has no path: the kernel maps it into every process.
    }
    return @($libs | Select-Object -Unique)
}

function New-GuestRootfs {
    param([Parameter(Mandatory)][string] $Root, [Parameter(Mandatory)][string] $Busybox)
    foreach ($d in 'bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'run', 'mnt', 'var') {
        New-GuestDirectory -Path ([System.IO.Path]::Combine($Root, $d))
    }
    New-GuestDirectory -Path ([System.IO.Path]::Combine($Root, 'root')) -Mode 448 # 0700
    # Sticky, world-writable temp dirs (1777) as any unprivileged process inside expects.
    foreach ($d in 'tmp', 'var/tmp') {
        New-GuestDirectory -Path ([System.IO.Path]::Combine($Root, $d)) -Mode 1023
    }
    $bbTarget = [System.IO.Path]::Combine($Root, 'bin', 'busybox')
    Copy-GuestFile -Source $Busybox -Destination $bbTarget -Mode 493
    # --list-full is asked of the packaged binary (static, so it runs on any x86-64 host) so the links
    # match exactly the applets that were compiled in.
    foreach ($applet in (Invoke-GuestNative $Busybox @('--list-full'))) {
        $rel = $applet.Trim().TrimStart('/')
        if (-not $rel -or $rel -eq 'bin/busybox') { continue }
        $link = [System.IO.Path]::Combine($Root, $rel)
        New-GuestDirectory -Path ([System.IO.Path]::GetDirectoryName($link))
        if (-not [System.IO.File]::Exists($link)) {
            $null = [System.IO.File]::CreateSymbolicLink($link, '/bin/busybox')
        }
    }
    $etc = [System.IO.Path]::Combine($Root, 'etc')
    Write-GuestTextFile -Path "$etc/passwd" -Text ("root:x:0:0:root:/root:/bin/sh`n" +
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false`n")
    Write-GuestTextFile -Path "$etc/group" -Text "root:x:0:`nnogroup:x:65534:`n"
    Write-GuestTextFile -Path "$etc/hostname" -Text "microsandbox`n"
    Write-GuestTextFile -Path "$etc/hosts" -Text ("127.0.0.1`tlocalhost`n::1`tlocalhost ip6-localhost " +
        "ip6-loopback`n127.0.1.1`tmicrosandbox`n")
}

function Test-GuestAssetsCurrent {
    param(
        [Parameter(Mandatory)][string] $OutDir,
        [Parameter(Mandatory)][string[]] $Files,
        [Parameter(Mandatory)][System.Collections.IDictionary] $Inputs
    )
    $manifestPath = [System.IO.Path]::Combine($OutDir, 'guest.json')
    if (-not [System.IO.File]::Exists($manifestPath)) { return $false }
    foreach ($f in $Files) {
        if (-not [System.IO.File]::Exists([System.IO.Path]::Combine($OutDir, $f))) { return $false }
    }
    try {
        $old = [System.IO.File]::ReadAllText($manifestPath) | ConvertFrom-Json -AsHashtable
    } catch {
        Write-Verbose "Ignoring unreadable $manifestPath"
        return $false
    }
    foreach ($key in $Inputs.Keys) {
        if (-not $old.ContainsKey($key) -or [string]$old[$key] -cne [string]$Inputs[$key]) {
            Write-Verbose "Guest assets are stale: $key changed"
            return $false
        }
    }
    return $true
}

function Remove-GuestStaleWork {
    # Leftovers of interrupted builds (an extracted kernel is ~400 MB). Only old ones are removed, so a
    # concurrent build's live directory is left alone.
    param([Parameter(Mandatory)][string] $Directory, [Parameter(Mandatory)][string] $Pattern)
    $cutoff = [DateTime]::UtcNow.AddHours(-1)
    foreach ($d in [System.IO.Directory]::GetDirectories($Directory, $Pattern)) {
        if ([System.IO.Directory]::GetLastWriteTimeUtc($d) -lt $cutoff) {
            Write-Verbose "Removing stale $d"
            [System.IO.Directory]::Delete($d, $true)
        }
    }
}

function Build-GuestAssets {
    <#
    .SYNOPSIS
    Builds OutDir/vmlinuz, OutDir/vmlinux, OutDir/initramfs.img and OutDir/guest.json for the microVM.
    .DESCRIPTION
    vmlinuz is Debian's bzImage; vmlinux is the same kernel as a PVH-bootable ELF, the faster choice for
    QEMU -kernel under TCG. Kernel and busybox come from Debian packages fetched with apt-get download
    and cached in CacheDir.
    Skips all work when OutDir already matches the kernel package version, busybox version, agent hash
    and this script's hash, unless -Force. Must run as root (device nodes in the archive).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string] $AgentPath,
        [Parameter(Mandatory)][string] $ExecHelperPath,
        [Parameter(Mandatory)][string] $OutDir,
        [Parameter(Mandatory)][string] $CacheDir,
        [switch] $Force
    )
    Set-StrictMode -Version 3.0
    $ErrorActionPreference = 'Stop'

    if (-not $IsLinux) { throw 'Guest assets can only be built on Linux (Debian packages, cpio, mknod).' }
    foreach ($t in @(@('apt-get', 'apt'), @('apt-cache', 'apt'), @('dpkg-deb', 'dpkg'), @('cpio', 'cpio'),
            @('mknod', 'coreutils'), @('xz', 'xz-utils'))) {
        Assert-GuestTool -Name $t[0] -Package $t[1]
    }
    if ((Invoke-GuestNative id @('-u'))[0] -ne '0') {
        throw 'Build-GuestAssets must run as root: the initramfs needs /dev/console and /dev/null device ' +
            'nodes (mknod) and root-owned files.'
    }
    $AgentPath = [System.IO.Path]::GetFullPath($AgentPath, (Get-Location).Path)
    $OutDir = [System.IO.Path]::GetFullPath($OutDir, (Get-Location).Path)
    $CacheDir = [System.IO.Path]::GetFullPath($CacheDir, (Get-Location).Path)
    if (-not [System.IO.File]::Exists($AgentPath)) { throw "Agent binary not found: $AgentPath" }

    $scriptFile = $MyInvocation.MyCommand.ScriptBlock.File
    $scriptSha = if ($scriptFile) { Get-GuestFileSha256 -Path $scriptFile } else { 'unknown' }
    $agentSha = Get-GuestFileSha256 -Path $AgentPath
    $ExecHelperPath = [System.IO.Path]::GetFullPath($ExecHelperPath, (Get-Location).Path)
    if (-not [System.IO.File]::Exists($ExecHelperPath)) { throw "Terminal helper not found: $ExecHelperPath" }
    $execHelperSha = Get-GuestFileSha256 -Path $ExecHelperPath
    $packages = Resolve-GuestPackages
    $kernelPkg = [pscustomobject]@{ Name = $packages.KernelPackage; Version = $packages.KernelVersion }
    $busyboxVersion = $packages.BusyboxVersion
    $inputs = [ordered]@{
        kernelPackage        = $kernelPkg.Name
        kernelPackageVersion = $kernelPkg.Version
        busyboxVersion       = $busyboxVersion
        agentSha256          = $agentSha
        execHelperSha256     = $execHelperSha
        guestScriptSha256    = $scriptSha
    }
    $outputs = 'vmlinuz', 'vmlinux', 'initramfs.img', 'rootfs.tar'
    $manifestPath = [System.IO.Path]::Combine($OutDir, 'guest.json')

    if (-not $Force -and (Test-GuestAssetsCurrent -OutDir $OutDir -Files $outputs -Inputs $inputs)) {
        Write-Verbose "Guest assets in $OutDir are up to date"
        return
    }

    New-GuestDirectory -Path $CacheDir
    New-GuestDirectory -Path $OutDir
    Remove-GuestStaleWork -Directory $CacheDir -Pattern 'work-*'
    Remove-GuestStaleWork -Directory $OutDir -Pattern '.tmp-*'
    $work = [System.IO.Path]::Combine($CacheDir, "work-$([guid]::NewGuid().ToString('N'))")
    # Staged next to the outputs so the final moves are same-filesystem renames.
    $outTmp = [System.IO.Path]::Combine($OutDir, ".tmp-$([guid]::NewGuid().ToString('N'))")
    try {
        New-GuestDirectory -Path $work
        New-GuestDirectory -Path $outTmp
        $kernelDeb = Get-GuestDeb -Package $kernelPkg.Name -Version $kernelPkg.Version -CacheDir $CacheDir
        $busyboxDeb = Get-GuestDeb -Package 'busybox-static' -Version $busyboxVersion -CacheDir $CacheDir

        Write-Verbose "Extracting $($kernelPkg.Name) $($kernelPkg.Version)"
        $kroot = [System.IO.Path]::Combine($work, 'kernel')
        Expand-GuestDeb -Deb $kernelDeb -Destination $kroot
        $vmlinuz = @([System.IO.Directory]::GetFiles([System.IO.Path]::Combine($kroot, 'boot'), 'vmlinuz-*'))
        if ($vmlinuz.Count -ne 1) {
            throw "Expected one boot/vmlinuz-* in $kernelDeb, found $($vmlinuz.Count)."
        }
        $kver = [System.IO.Path]::GetFileName($vmlinuz[0]).Substring('vmlinuz-'.Length)
        $modulesRoot = [System.IO.Path]::Combine($kroot, 'lib', 'modules', $kver)
        if (-not [System.IO.Directory]::Exists($modulesRoot)) { throw "$kernelDeb has no lib/modules/$kver." }
        Copy-GuestFile -Source $vmlinuz[0] -Destination ([System.IO.Path]::Combine($outTmp, 'vmlinuz'))
        Write-Verbose 'Extracting the PVH-bootable vmlinux from the bzImage'
        $vmlinux = [System.IO.Path]::Combine($outTmp, 'vmlinux')
        Export-GuestPvhKernel -BzImage $vmlinuz[0] -Destination $vmlinux

        $stage = [System.IO.Path]::Combine($work, 'initramfs')
        New-GuestDirectory -Path $stage
        foreach ($d in 'dev', 'proc', 'sys', 'newroot', 'rootfs', 'etc', 'etc/msb', 'lib', 'lib/modules') {
            New-GuestDirectory -Path ([System.IO.Path]::Combine($stage, $d))
        }

        Write-Verbose "Resolving kernel modules for $kver"
        $plan = Get-GuestModulePlan -ModulesRoot $modulesRoot
        $kconfig = [System.IO.Path]::Combine($kroot, 'boot', "config-$kver")
        $sigForced = [System.IO.File]::Exists($kconfig) -and
            ([System.IO.File]::ReadAllText($kconfig) -match '(?m)^CONFIG_MODULE_SIG_FORCE=y')
        $modulePaths = [System.Collections.Generic.List[string]]::new()
        foreach ($m in $plan.Order) {
            $rel = $m.Source.Substring($modulesRoot.Length).TrimStart('/')
            $rel = $rel -replace '\.ko\.(xz|zst|gz)$', '.ko'
            $guestPath = "/lib/modules/$kver/$rel"
            $dest = [System.IO.Path]::Combine($stage, $guestPath.TrimStart('/'))
            New-GuestDirectory -Path ([System.IO.Path]::GetDirectoryName($dest))
            $bytes = if ($sigForced) { $m.Bytes } else { Remove-GuestModuleSignature -Bytes $m.Bytes }
            [System.IO.File]::WriteAllBytes($dest, $bytes)
            [System.IO.File]::SetUnixFileMode($dest, 420)
            $modulePaths.Add($guestPath)
            Write-Verbose "  module $guestPath"
        }
        foreach ($b in $plan.Builtin) { Write-Verbose "  built in: $b" }
        Write-GuestTextFile -Path ([System.IO.Path]::Combine($stage, 'etc', 'msb', 'modules')) `
            -Text (($modulePaths | ForEach-Object { "$_`n" }) -join '')

        Write-Verbose "Building default rootfs from busybox-static $busyboxVersion"
        $bbroot = [System.IO.Path]::Combine($work, 'busybox')
        Expand-GuestDeb -Deb $busyboxDeb -Destination $bbroot
        $busybox = [System.IO.Path]::Combine($bbroot, 'bin', 'busybox')
        if (-not [System.IO.File]::Exists($busybox)) { throw "$busyboxDeb contains no bin/busybox." }
        $rootfs = [System.IO.Path]::Combine($work, 'rootfs')
        New-GuestRootfs -Root $rootfs -Busybox $busybox
        # One layer tar, root-owned and sorted, so the image built from it is the same on every host.
        $rootfsTar = [System.IO.Path]::Combine($outTmp, 'rootfs.tar')
        $null = Invoke-GuestNative tar @('--sort=name', '--numeric-owner', '--owner=0', '--group=0',
            '--mtime=@0', '--format=posix', '--pax-option=delete=atime,delete=ctime', '-C', $rootfs,
            '-cf', $rootfsTar, '.')
        [System.IO.File]::SetUnixFileMode($rootfsTar, 420)

        Write-Verbose "Adding agent $AgentPath as /init"
        Copy-GuestFile -Source $AgentPath -Destination ([System.IO.Path]::Combine($stage, 'init')) -Mode 493
        foreach ($lib in (Get-GuestSharedLibraries -Path $AgentPath)) {
            Write-Verbose "  library $lib"
            $dest = [System.IO.Path]::Combine($stage, $lib.TrimStart('/'))
            Copy-GuestFile -Source $lib -Destination $dest -Mode 493
        }

        # Outside every sandbox root; the agent runs it through its open descriptor (/proc/1/fd/N).
        Copy-GuestFile -Source $ExecHelperPath -Destination ([System.IO.Path]::Combine($stage, 'msb-exec')) -Mode 493

        # The kernel opens /dev/console for PID 1 before anything can mount devtmpfs; without the node
        # the agent would start with no stdin/stdout/stderr.
        $devDir = [System.IO.Path]::Combine($stage, 'dev')
        $null = Invoke-GuestNative mknod @('-m', '600', "$devDir/console", 'c', '5', '1')
        $null = Invoke-GuestNative mknod @('-m', '666', "$devDir/null", 'c', '1', '3')

        # Uncompressed on purpose. Measured under TCG (this kernel, 2 vCPUs, 25 MB test archive), time the
        # kernel spent unpacking: none 0.33-0.50 s, lz4 0.39-0.62 s, zstd -3 0.64-1.07 s, gzip -9 0.8-1.6 s;
        # xz needed ~1.4 s for just 7 MB. QEMU copies the initrd into guest RAM at native speed, so the
        # bigger file is free, while any decompressor runs as emulated code.
        $compression = 'none'
        $cpioOut = [System.IO.Path]::Combine($outTmp, 'initramfs.img')
        Write-Verbose "Writing newc cpio archive ($compression)"
        # Sorted entries, root ownership and --reproducible (no host inode/device numbers) keep the archive
        # independent of who built it and on which filesystem.
        $cpioScript = 'cd "$0" && find . -mindepth 1 | LC_ALL=C sort | ' +
            'cpio --quiet -o -H newc --owner 0:0 --reproducible -O "$1"'
        $null = Invoke-GuestNative sh @('-c', $cpioScript, $stage, $cpioOut)
        [System.IO.File]::SetUnixFileMode($cpioOut, 420)

        $manifest = [ordered]@{
            kernelVersion    = $kver
            kernel           = 'vmlinuz'
            pvhKernel        = 'vmlinux'
            initramfs        = 'initramfs.img'
            compression      = $compression
            moduleSignatures = if ($sigForced) { 'kept' } else { 'stripped' }
            modules          = @($modulePaths)
            builtinModules   = @($plan.Builtin)
            initramfsSha256  = (Get-GuestFileSha256 -Path $cpioOut)
            rootfs           = 'rootfs.tar'
            rootfsSha256     = (Get-GuestFileSha256 -Path $rootfsTar)
        }
        foreach ($key in $inputs.Keys) { $manifest[$key] = $inputs[$key] }
        Write-GuestTextFile -Path ([System.IO.Path]::Combine($outTmp, 'guest.json')) `
            -Text (($manifest | ConvertTo-Json -Depth 4) + "`n")

        # guest.json is the completeness marker: drop the old one first and publish the new one last, so
        # an interruption between the renames leaves assets that the next build redoes, never trusts.
        if ([System.IO.File]::Exists($manifestPath)) { [System.IO.File]::Delete($manifestPath) }
        foreach ($f in @($outputs) + 'guest.json') {
            $from = [System.IO.Path]::Combine($outTmp, $f)
            [System.IO.File]::Move($from, [System.IO.Path]::Combine($OutDir, $f), $true)
        }
        Write-Verbose "Guest assets written to $OutDir"
    } finally {
        foreach ($d in $work, $outTmp) {
            if ([System.IO.Directory]::Exists($d)) { [System.IO.Directory]::Delete($d, $true) }
        }
    }
}
