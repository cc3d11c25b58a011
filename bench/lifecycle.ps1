#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Fleet measurements: stopping and removing N sandboxes in one bulk call by label, beside the
    same N stopped and removed one call after another.
.DESCRIPTION
    Each round boots N sandboxes (in parallel, not measured), then times either
    `Stop-Sandbox -Label` + `Remove-Sandbox -Label` (the cmdlets act on up to 8 sandboxes at
    once) or a loop of `Stop-Sandbox -Name` + `Remove-Sandbox -Name`, one sandbox per call. Both
    run in the same invocation on the same host, so their ratio holds where absolute times do not.
    A graceful stop waits for the guest to sync and power off, so it is the step that gains most.
    Run after `./build.ps1 Build Guest`. Uses its own MSB_HOME under out/.
.EXAMPLE
    dotnet pwsh ./bench/lifecycle.ps1 -Count 8 -Rounds 2
#>
[CmdletBinding()]
param(
    [int] $Count = 8,
    [int] $Rounds = 1,
    [int] $MemoryMB = 128,
    [string] $Module = (Join-Path $PSScriptRoot '../out/Microsandbox/Microsandbox.psd1')
)

$ErrorActionPreference = 'Stop'
$Module = (Resolve-Path $Module).Path
Import-Module $Module -Force
$env:MSB_HOME = Join-Path $PSScriptRoot '../out/bench-home'
New-Item -ItemType Directory -Force $env:MSB_HOME | Out-Null
Get-Sandbox | Remove-Sandbox -Force

function New-Fleet([string] $Label) {
    1..$Count | ForEach-Object -ThrottleLimit 8 -Parallel {
        Import-Module $using:Module
        $null = New-Sandbox -Name "bench-$($using:Label)-$_" -MemoryMB $using:MemoryMB -Label @{ fleet = $using:Label } `
            -WarningAction SilentlyContinue
    }
    $running = @(Get-Sandbox -Label "fleet=$Label" | Where-Object State -eq 'Running')
    if ($running.Count -ne $Count) { throw "Only $($running.Count) of $Count sandboxes booted." }
}

function Measure-Step([scriptblock] $Step) {
    $clock = [Diagnostics.Stopwatch]::StartNew()
    & $Step
    $clock.Elapsed.TotalMilliseconds
}

$results = foreach ($round in 1..$Rounds) {
    New-Fleet 'bulk'
    $bulkStop = Measure-Step { Stop-Sandbox -Label fleet=bulk }
    $bulkRemove = Measure-Step { Remove-Sandbox -Label fleet=bulk -Force }

    New-Fleet 'serial'
    $names = (Get-Sandbox -Label fleet=serial).Name
    $serialStop = Measure-Step { foreach ($name in $names) { Stop-Sandbox -Name $name } }
    $serialRemove = Measure-Step { foreach ($name in $names) { Remove-Sandbox -Name $name -Force } }
    [pscustomobject]@{
        BulkStop = $bulkStop; BulkRemove = $bulkRemove; SerialStop = $serialStop; SerialRemove = $serialRemove
    }
}

function Get-Median([double[]] $Values) {
    $sorted = [double[]]($Values | Sort-Object)
    $sorted[[int][Math]::Floor($sorted.Length / 2)]
}

$bulkStop = Get-Median $results.BulkStop
$serialStop = Get-Median $results.SerialStop
$bulkRemove = Get-Median $results.BulkRemove
$serialRemove = Get-Median $results.SerialRemove
$accel = (Get-Content (Join-Path $env:MSB_HOME 'cache/accelerator.json') -Raw -ErrorAction Ignore | ConvertFrom-Json)
[pscustomobject]@{ Measure = 'Sandboxes per round, rounds'; Value = "$Count, $Rounds" }
[pscustomobject]@{ Measure = 'Accelerator'; Value = if ($accel) { "$($accel.name)" } else { 'unknown' } }
[pscustomobject]@{ Measure = "Stop $Count, one call by label"; Value = '{0:0} ms' -f $bulkStop }
[pscustomobject]@{ Measure = "Stop $Count, one call each"; Value = '{0:0} ms' -f $serialStop }
[pscustomobject]@{ Measure = 'Stop: one after another / bulk'; Value = '{0:0.00}x' -f ($serialStop / $bulkStop) }
[pscustomobject]@{ Measure = "Remove $Count stopped, one call by label"; Value = '{0:0} ms' -f $bulkRemove }
[pscustomobject]@{ Measure = "Remove $Count stopped, one call each"; Value = '{0:0} ms' -f $serialRemove }
[pscustomobject]@{ Measure = 'Remove: one after another / bulk'; Value = '{0:0.00}x' -f ($serialRemove / $bulkRemove) }
Get-Sandbox | Remove-Sandbox -Force
