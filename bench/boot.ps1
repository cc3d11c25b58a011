#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Boot and exec measurements: New-Sandbox boot-to-ready beside a bare QEMU boot of the same
    kernel and initramfs to init, and the exec round trip of `true`.
.DESCRIPTION
    Both boots run in the same invocation on the same host, so their ratio holds across machines
    even where absolute times do not. The bare boot uses the engine's own QEMU command line with
    an init that restarts the VM at once (the agent's msb.exit), so it measures kernel boot to
    init and nothing else of ours.
    Run after `./build.ps1 Build Guest`. Uses its own MSB_HOME under out/.
.EXAMPLE
    dotnet pwsh ./bench/boot.ps1 -Iterations 5 -Execs 100
#>
[CmdletBinding()]
param(
    [int] $Iterations = 3,
    [int] $Execs = 50,
    [string] $Module = (Join-Path $PSScriptRoot '../out/Microsandbox/Microsandbox.psd1')
)

$ErrorActionPreference = 'Stop'
Import-Module $Module -Force
$env:MSB_HOME = Join-Path $PSScriptRoot '../out/bench-home'
New-Item -ItemType Directory -Force $env:MSB_HOME | Out-Null
Get-Sandbox | Remove-Sandbox -Force

function Get-Percentile([double[]] $Values, [double] $P) {
    $sorted = [double[]]($Values | Sort-Object)
    $index = [Math]::Min($sorted.Length - 1, [int][Math]::Floor($P * $sorted.Length))
    $sorted[$index]
}

$assets = [Microsandbox.Engine.GuestAssets]::Locate()
$qemu = [Microsandbox.Engine.Qemu]::Require()
$home_ = [Microsandbox.Engine.SandboxHome]::FromEnvironment()
$accel = [Microsandbox.Engine.AcceleratorProbe]::ResolveAsync($home_, $qemu, $assets, [Threading.CancellationToken]::None).
    GetAwaiter().GetResult()

$bare = foreach ($i in 1..$Iterations) {
    $dir = Join-Path ([IO.Path]::GetTempPath()) "msb-bench-$PID-$i"
    New-Item -ItemType Directory -Force $dir | Out-Null
    $config = [Microsandbox.Engine.MicroVmConfig]@{
        Accelerator          = $accel.Name
        KernelPath           = $assets.KernelPath
        InitramfsPath        = $assets.InitramfsPath
        ConsoleLogPath       = Join-Path $dir 'console.log'
        AgentSocketPath      = Join-Path $dir 'agent.sock'
        ExtraKernelArguments = [string[]]@('msb.exit')
    }
    $arguments = [Microsandbox.Engine.Qemu]::MicroVmArguments($config)
    $clock = [Diagnostics.Stopwatch]::StartNew()
    & $qemu.Path @arguments
    $clock.Elapsed.TotalMilliseconds
    if ($LASTEXITCODE -ne 0) { Write-Warning "bare QEMU exited with $LASTEXITCODE" }
    Remove-Item $dir -Recurse -Force
}

$sandbox = foreach ($i in 1..$Iterations) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $null = New-Sandbox -Name "bench-$i" -WarningAction SilentlyContinue
    $clock.Elapsed.TotalMilliseconds
    Remove-Sandbox -Name "bench-$i" -Force
}

$null = New-Sandbox -Name bench-exec -WarningAction SilentlyContinue
$execTimes = foreach ($i in 1..$Execs) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    Invoke-SandboxCommand -Name bench-exec -FilePath /bin/true
    $clock.Elapsed.TotalMilliseconds
}
Remove-Sandbox -Name bench-exec -Force

$bareMedian = Get-Percentile $bare 0.5
$sandboxMedian = Get-Percentile $sandbox 0.5
[pscustomobject]@{ Measure = 'Accelerator'; Value = "$($accel.Name) ($($accel.Reason))" }
[pscustomobject]@{ Measure = "Bare QEMU boot to init, median of $Iterations"; Value = '{0:0} ms' -f $bareMedian }
[pscustomobject]@{ Measure = "New-Sandbox boot to ready, median of $Iterations"; Value = '{0:0} ms' -f $sandboxMedian }
[pscustomobject]@{ Measure = 'New-Sandbox / bare boot'; Value = '{0:0.00}x' -f ($sandboxMedian / $bareMedian) }
[pscustomobject]@{ Measure = "Exec round trip of true, p50 ($Execs runs)"; Value = '{0:0.0} ms' -f (Get-Percentile $execTimes 0.5) }
[pscustomobject]@{ Measure = "Exec round trip of true, p95 ($Execs runs)"; Value = '{0:0.0} ms' -f (Get-Percentile $execTimes 0.95) }
