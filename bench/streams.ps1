#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Stream measurements: a command's stdout and stdin throughput through Invoke-SandboxCommand
    beside the raw throughput of the same agent channel with no protocol.
.DESCRIPTION
    In one invocation, on the same host:
      - raw out / raw in: a bare QEMU boot of our kernel and initramfs in which the agent, asked by
        msb.rawbench on the kernel line, writes (or reads) N bytes straight to (from) its
        virtio-serial port, with no frames, no flow control and no process; the host times the
        bytes on the port's socket from the first to the last;
      - guest only: the same N bytes from dd to /dev/null, and through a pipe inside the guest (dd
        to wc), which is what the guest spends before our channel is involved;
      - ours out: `Invoke-SandboxCommand 'dd if=/dev/zero ...' -AsByteStream`, the bytes counted
        on the pipeline; ours in: `Invoke-SandboxCommand 'dd of=/dev/null' -InputFile` of an N-byte
        file;
      - files in / files out: Copy-SandboxItem of an N-byte file into the guest's /tmp and back
        out to the host, through the agent's own file sessions;
      - and the host's peak working set during ours out, to show it stays bounded.
    Run after `./build.ps1 Build Guest`. Uses its own MSB_HOME under out/.
.EXAMPLE
    dotnet pwsh ./bench/streams.ps1 -MegaBytes 64 -Iterations 3
#>
[CmdletBinding()]
param(
    [int] $MegaBytes = 64,
    [int] $Iterations = 3,
    [string] $Module = (Join-Path $PSScriptRoot '../out/Microsandbox/Microsandbox.psd1')
)

$ErrorActionPreference = 'Stop'
Import-Module $Module -Force
$env:MSB_HOME = Join-Path $PSScriptRoot '../out/bench-streams-home'
New-Item -ItemType Directory -Force $env:MSB_HOME | Out-Null
Get-Sandbox | Remove-Sandbox -Force
$bytes = [long]$MegaBytes * 1MB

function Get-Median([double[]] $Values) { ($Values | Sort-Object)[[int][Math]::Floor($Values.Count / 2)] }
function Get-Rate([long] $Bytes, [double] $Seconds) { $Bytes / 1MB / $Seconds }

$assets = [Microsandbox.Engine.GuestAssets]::Locate()
$qemu = [Microsandbox.Engine.Qemu]::Require()
$homeFolder = [Microsandbox.Engine.SandboxHome]::FromEnvironment()
$accel = [Microsandbox.Engine.AcceleratorProbe]::ResolveAsync($homeFolder, $qemu, $assets,
    [Threading.CancellationToken]::None).GetAwaiter().GetResult()

function Measure-RawChannel([string] $Direction) {
    $dir = Join-Path ([IO.Path]::GetTempPath()) "msb-bench-raw-$PID"
    New-Item -ItemType Directory -Force $dir | Out-Null
    $socketPath = Join-Path $dir 'agent.sock'
    $config = [Microsandbox.Engine.MicroVmConfig]@{
        Accelerator          = $accel.Name
        KernelPath           = $assets.KernelPath
        InitramfsPath        = $assets.InitramfsPath
        ConsoleLogPath       = Join-Path $dir 'console.log'
        AgentSocketPath      = $socketPath
        ExtraKernelArguments = [string[]]@("msb.rawbench=$($Direction):$bytes")
    }
    $arguments = [Microsandbox.Engine.Qemu]::MicroVmArguments($config)
    # ArgumentList keeps the kernel command line one argument, spaces and all.
    $start = [Diagnostics.ProcessStartInfo]::new($qemu.Path)
    foreach ($argument in $arguments) { $start.ArgumentList.Add($argument) }
    $start.RedirectStandardOutput = $true
    $vmm = [Diagnostics.Process]::Start($start)
    try {
        $socket = [Net.Sockets.Socket]::new([Net.Sockets.AddressFamily]::Unix, [Net.Sockets.SocketType]::Stream,
            [Net.Sockets.ProtocolType]::Unspecified)
        $deadline = [DateTime]::UtcNow.AddSeconds(30)
        while ($true) {
            try { $socket.Connect([Net.Sockets.UnixDomainSocketEndPoint]::new($socketPath)); break }
            catch { if ([DateTime]::UtcNow -gt $deadline) { throw } Start-Sleep -Milliseconds 20 }
        }
        $stream = [Net.Sockets.NetworkStream]::new($socket, $true)
        $buffer = [byte[]]::new(1MB)
        if ($Direction -eq 'out') {
            # Timed from the first byte: the boot before it is not the channel's.
            $n = $stream.Read($buffer, 0, $buffer.Length)
            $clock = [Diagnostics.Stopwatch]::StartNew()
            $done = [long]$n
            while ($done -lt $bytes) {
                $n = $stream.Read($buffer, 0, $buffer.Length)
                if ($n -le 0) { throw "raw out: the port closed after $done bytes" }
                $done += $n
            }
        }
        else {
            # The guest reads only once it has booted: the first write waits for it, and the clock
            # starts once the first megabyte is taken.
            $stream.Write($buffer, 0, $buffer.Length)
            $clock = [Diagnostics.Stopwatch]::StartNew()
            for ($done = [long]$buffer.Length; $done -lt $bytes; $done += $buffer.Length) {
                $stream.Write($buffer, 0, [int][Math]::Min($buffer.Length, $bytes - $done))
            }
            if ($stream.Read($buffer, 0, 1) -ne 1) { throw 'raw in: no acknowledgement from the guest' }
        }
        $elapsed = $clock.Elapsed.TotalSeconds
        $stream.Dispose()
        return Get-Rate ($bytes - 1MB) $elapsed
    }
    finally {
        if (-not $vmm.WaitForExit(30000)) { $vmm.Kill() }
        Remove-Item $dir -Recurse -Force -ErrorAction Ignore
    }
}

$rawOut = foreach ($i in 1..$Iterations) { Measure-RawChannel 'out' }
$rawIn = foreach ($i in 1..$Iterations) { Measure-RawChannel 'in' }

$null = New-Sandbox -Name bench-streams -WarningAction SilentlyContinue
$count = [int]($bytes / 64KB)
$guestOnly = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $null = Invoke-SandboxCommand -Name bench-streams "dd if=/dev/zero bs=64k count=$count 2>/dev/null | wc -c"
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}

$guestNoPipe = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $null = Invoke-SandboxCommand -Name bench-streams "dd if=/dev/zero bs=64k count=$count of=/dev/null 2>/dev/null"
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}

$self = Get-Process -Id $PID
$peak = 0
$oursOut = foreach ($i in 1..$Iterations) {
    $received = [long]0
    $clock = [Diagnostics.Stopwatch]::StartNew()
    Invoke-SandboxCommand -Name bench-streams "dd if=/dev/zero bs=64k count=$count 2>/dev/null" -AsByteStream |
        ForEach-Object {
            $received += $_.Length
            if (($received % 16MB) -lt $_.Length) { $self.Refresh(); $peak = [Math]::Max($peak, $self.WorkingSet64) }
        }
    if ($received -ne $bytes) { throw "ours out: $received of $bytes bytes" }
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}

$file = Join-Path ([IO.Path]::GetTempPath()) "msb-bench-streams-$PID.bin"
$writer = [IO.File]::Create($file)
$writer.SetLength($bytes)
$writer.Dispose()
$oursIn = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    # dd reads the pipe in blocks of up to 64 KiB, as dd writes it in the out direction. BusyBox
    # dd counts blocks, not bytes: whole ones must make up at least all but the partial reads.
    $result = Invoke-SandboxCommand -Name bench-streams 'dd bs=64k of=/dev/null' -InputFile $file -PassThru
    if ($result.ExitCode -ne 0 -or $result.Stderr -notmatch '(\d+)\+(\d+) records in' -or
        ([long]$Matches[1] * 64KB + [long]$Matches[2] * 64KB) -lt $bytes) {
        throw "ours in: dd in the guest says '$($result.Stderr)' for $bytes bytes"
    }
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}
$back = "$file.back"
$filesIn = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    Copy-SandboxItem -Path $file -ToSandbox bench-streams -Destination /tmp/bench.bin
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}
$filesOut = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    Copy-SandboxItem -Path /tmp/bench.bin -FromSandbox bench-streams -Destination $back
    Get-Rate $bytes $clock.Elapsed.TotalSeconds
}
if ((Get-Item $back).Length -ne $bytes) { throw "files out: $((Get-Item $back).Length) of $bytes bytes" }
Remove-Item $file, $back
Remove-Sandbox -Name bench-streams -Force

$rows = [ordered]@{
    "Raw channel out (guest port to host socket), median of $Iterations" = Get-Median $rawOut
    "Guest only: dd to /dev/null, no pipe, median of $Iterations"         = Get-Median $guestNoPipe
    "Guest only: dd | wc inside the guest, median of $Iterations"         = Get-Median $guestOnly
    "Ours out: Invoke-SandboxCommand dd -AsByteStream, median of $Iterations" = Get-Median $oursOut
    "Raw channel in (host socket to guest port), median of $Iterations"   = Get-Median $rawIn
    "Ours in: Invoke-SandboxCommand dd -InputFile, median of $Iterations" = Get-Median $oursIn
    "Files in: Copy-SandboxItem host to guest /tmp, median of $Iterations" = Get-Median $filesIn
    "Files out: Copy-SandboxItem guest /tmp to host, median of $Iterations" = Get-Median $filesOut
}
[pscustomobject]@{ Measure = 'Accelerator'; Value = $accel.Name }
[pscustomobject]@{ Measure = 'Bytes per run'; Value = "$MegaBytes MiB" }
foreach ($row in $rows.GetEnumerator()) {
    [pscustomobject]@{ Measure = $row.Key; Value = '{0:0.0} MiB/s' -f $row.Value }
}
[pscustomobject]@{ Measure = 'Ours out / raw out'; Value = '{0:0.00}x' -f ((Get-Median $oursOut) / (Get-Median $rawOut)) }
[pscustomobject]@{ Measure = 'Ours in / raw in'; Value = '{0:0.00}x' -f ((Get-Median $oursIn) / (Get-Median $rawIn)) }
[pscustomobject]@{ Measure = 'Files in / raw in'; Value = '{0:0.00}x' -f ((Get-Median $filesIn) / (Get-Median $rawIn)) }
[pscustomobject]@{ Measure = 'Files out / raw out'; Value = '{0:0.00}x' -f ((Get-Median $filesOut) / (Get-Median $rawOut)) }
[pscustomobject]@{ Measure = 'Host working set, peak during ours out'; Value = '{0:0} MiB' -f ($peak / 1MB) }
