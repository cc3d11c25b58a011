# Shared by the Pester files, dot-sourced so that these functions share the tests' scope (an
# error preference set here then reaches the script blocks the tests pass in).

function Import-MicrosandboxUnderTest {
    $module = $env:MSB_TEST_MODULE
    if (-not $module) { $module = Join-Path $PSScriptRoot '../../out/Microsandbox/Microsandbox.psd1' }
    Import-Module $module -Force -Global -ErrorAction Stop
    return (Resolve-Path $module).Path
}

function Invoke-Captured {
    <# Runs a script block and returns its output and the errors it wrote, without stopping. #>
    param([scriptblock] $ScriptBlock)
    $ErrorActionPreference = 'Continue'
    # A terminating error ends the block; it is collected like the others.
    $all = @(try { & $ScriptBlock 2>&1 } catch { $_ })
    [pscustomobject]@{
        Output = @($all | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] })
        Errors = @($all | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
    }
}

function Get-ErrorId {
    param([System.Management.Automation.ErrorRecord] $ErrorRecord)
    return ($ErrorRecord.FullyQualifiedErrorId -split ',')[0]
}

function Get-QemuPid {
    <# Process ids of the QEMU instances started for sandboxes of the current home. #>
    @(Get-Process -Name 'qemu-system-x86_64' -ErrorAction Ignore |
        Where-Object { $_.CommandLine -like "*$($env:MSB_HOME)*" } | ForEach-Object Id)
}

function Invoke-ChildPwsh {
    <# Runs a script in a fresh pwsh that imports the module under test; returns its output lines. #>
    param([string] $Script)
    # Under the .NET tool, this process is dotnet running pwsh.dll: run that same file.
    $pwsh = (Get-Process -Id $PID).Path
    $prefix = @(if ($pwsh -match 'dotnet(\.exe)?$') { "$PSHOME/pwsh.dll" })
    $full = "`$ErrorActionPreference = 'Stop'; Import-Module '$($env:MSB_TEST_MODULE_PATH)'; $Script"
    $out = & $pwsh @prefix -NoProfile -NonInteractive -Command $full 2>&1
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = @($out | ForEach-Object { "$_" }) }
}

function Test-ProcessRunning {
    <# Whether a process exists and has not exited (a zombie awaiting its parent's wait has). #>
    param([int] $Id)
    $stat = Get-Content "/proc/$Id/stat" -Raw -ErrorAction Ignore
    return [bool]($stat -and ($stat -replace '^.*\) ', '')[0] -ne 'Z')
}

function Start-TestRegistry {
    <#
    Starts Debian's docker-registry on a free loopback port, open, or with -User and -Password
    wanting Basic auth (an htpasswd file in bcrypt, made by apache2-utils' htpasswd); returns its
    process, folder and port.
    #>
    param([string] $User, [string] $Password)
    $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
    $listener.Start()
    try { $port = $listener.LocalEndpoint.Port } finally { $listener.Stop() }
    $dir = Join-Path ([IO.Path]::GetTempPath()) "msb-registry-$PID-$port"
    New-Item -ItemType Directory -Force "$dir/data" | Out-Null
    $auth = ''
    if ($User) {
        $entry = & htpasswd -nbB $User $Password
        if ($LASTEXITCODE -ne 0) { throw "htpasswd (apache2-utils) failed with exit code $LASTEXITCODE." }
        Set-Content "$dir/htpasswd" $entry
        $auth = "auth:`n  htpasswd:`n    realm: msb-test`n    path: $dir/htpasswd"
    }
    Set-Content "$dir/config.yml" @"
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
$auth
"@
    $process = Start-Process /usr/bin/docker-registry -ArgumentList 'serve', "$dir/config.yml" `
        -RedirectStandardError "$dir/registry.log" -RedirectStandardOutput "$dir/out.log" -PassThru
    # Behind auth, /v2/ answers 401 once the registry is up.
    $ready = if ($User) { 401 } else { 200 }
    $deadline = [DateTime]::UtcNow.AddSeconds(20)
    do {
        Start-Sleep -Milliseconds 100
        $up = try { (Invoke-WebRequest "http://127.0.0.1:$port/v2/" -SkipHttpErrorCheck).StatusCode -eq $ready }
        catch { $false }
    } until ($up -or [DateTime]::UtcNow -gt $deadline)
    if (-not $up) { throw "docker-registry did not start: $(Get-Content "$dir/registry.log" -Raw)" }
    [pscustomobject]@{ Process = $process; Directory = $dir; Port = $port }
}

function Stop-TestRegistry {
    param($Registry)
    if (-not $Registry) { return }
    Stop-Process -Id $Registry.Process.Id -ErrorAction Ignore
    Remove-Item $Registry.Directory -Recurse -Force -ErrorAction Ignore
}

function New-LayerTar {
    <#
    Writes a PAX layer tar of the -Entry hashtables, in order: a regular file holding 'x', or with
    Link a symlink to it. Names are written as given (GNU tar would strip '../' and '/').
    #>
    param([string] $Path, [hashtable[]] $Entry)
    $file = [IO.File]::Create($Path)
    $writer = [System.Formats.Tar.TarWriter]::new($file, [System.Formats.Tar.TarEntryFormat]::Pax, $false)
    try {
        foreach ($item in $Entry) {
            $type = if ($item.Link) { 'SymbolicLink' } else { 'RegularFile' }
            $tarEntry = [System.Formats.Tar.PaxTarEntry]::new($type, $item.Name)
            if ($item.Link) { $tarEntry.LinkName = $item.Link }
            else { $tarEntry.DataStream = [IO.MemoryStream]::new([byte[]](0x78)) }
            $writer.WriteEntry($tarEntry)
        }
    }
    finally {
        $writer.Dispose()
    }
}

function Publish-TestImage {
    <#
    Pushes a layer tar (the built-in image's unless -LayerPath), gzipped, with an image config that
    sets what the engine applies, as <Reference>; returns the manifest's, config's and layer's
    digests. -Marker goes into the config as a label, so that one layer can make images of different
    digests; without -Created and -Marker the image is the same on every run, so a reused home holds
    one base for it. -Setting adds or replaces keys of the config's "config" object (User, Cmd...).
    #>
    param(
        [string] $Reference, [string] $Marker = 'images', [string] $Created, [string] $LayerPath,
        [System.Collections.IDictionary] $Setting = @{}
    )
    if (-not $LayerPath) { $LayerPath = Join-Path (Split-Path $env:MSB_TEST_MODULE_PATH) 'guest/rootfs.tar' }
    $tar = [IO.File]::ReadAllBytes($LayerPath)
    $buffer = [IO.MemoryStream]::new()
    $gzip = [IO.Compression.GZipStream]::new($buffer, [IO.Compression.CompressionLevel]::Fastest, $true)
    $gzip.Write($tar, 0, $tar.Length)
    $gzip.Dispose()
    $layer = $buffer.ToArray()
    $diffId = 'sha256:' +
        [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($tar)).ToLowerInvariant()
    # Ordered, because a hashtable's key order changes from process to process, and the digest with it.
    $document = [ordered]@{
        architecture = 'amd64'; os = 'linux'
        config       = [ordered]@{
            Env        = @('PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'FROM_IMAGE=yes', 'SHARED=image')
            WorkingDir = '/tmp'
            Labels     = [ordered]@{
                'org.example.team' = $Marker; 'tier' = 'image'; 'sandbox.owner' = 'nobody'
            }
        }
        rootfs       = [ordered]@{ type = 'layers'; diff_ids = @($diffId) }
    }
    foreach ($key in @($Setting.Keys | Sort-Object)) { $document.config[$key] = $Setting[$key] }
    if ($Created) { $document.created = $Created }
    $config = [Text.Encoding]::UTF8.GetBytes(($document | ConvertTo-Json -Depth 5))
    $client = [Microsandbox.Engine.Images.Registry.RegistryClient]::new()
    try {
        $ref = [Microsandbox.Engine.Images.Registry.ImageReference]::Parse($Reference)
        $none = [Threading.CancellationToken]::None
        $push = { param([byte[]] $Blob) $client.PushBlobAsync($ref, [ReadOnlyMemory[byte]]$Blob, $none) }
        $layerDigest = (& $push $layer).GetAwaiter().GetResult()
        $configDigest = (& $push $config).GetAwaiter().GetResult()
        $manifest = [Text.Encoding]::UTF8.GetBytes(([ordered]@{
            schemaVersion = 2
            mediaType     = 'application/vnd.oci.image.manifest.v1+json'
            config        = [ordered]@{
                mediaType = 'application/vnd.oci.image.config.v1+json'
                digest    = $configDigest
                size      = $config.Length
            }
            layers        = @([ordered]@{
                mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip'
                digest    = $layerDigest
                size      = $layer.Length
            })
        } | ConvertTo-Json -Depth 5))
        $manifestDigest = $client.PushManifestAsync($ref, 'application/vnd.oci.image.manifest.v1+json',
            [ReadOnlyMemory[byte]]$manifest, $none).GetAwaiter().GetResult()
    }
    finally {
        $client.Dispose()
    }
    [pscustomobject]@{
        Reference = $Reference; Manifest = $manifestDigest; Config = $configDigest; Layer = $layerDigest
        LayerSize = $layer.Length
    }
}
