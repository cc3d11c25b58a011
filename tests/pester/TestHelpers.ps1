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
