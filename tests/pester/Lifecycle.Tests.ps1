#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Lifecycle and fleet administration on real microVMs: labels and selectors, bulk start, stop,
# restart and remove by label (in parallel, each failure on its own), crashes of the runtime and
# of the VMM, limits the runtime enforces (maximum duration, idle timeout, an attached pwsh), waiting
# for a stop, and the logs. Boots are costly under emulation, so the sandboxes here are few,
# shared by the tests, and booted together.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:QemuBefore = @(Get-QemuPid)

    function New-TestSandboxes {
        <# Boots sandboxes in parallel, one runspace each; every argument is a New-Sandbox splat. #>
        param([hashtable[]] $Splats)
        $module = $env:MSB_TEST_MODULE_PATH
        $Splats | ForEach-Object -ThrottleLimit 8 -Parallel {
            Import-Module $using:module
            $splat = $_
            $null = New-Sandbox @splat -MemoryMB 128 -WarningAction SilentlyContinue -ErrorAction Stop
        }
    }

    function Wait-Until([scriptblock] $Condition, [int] $Seconds = 60) {
        $deadline = [DateTime]::UtcNow.AddSeconds($Seconds)
        while (-not (& $Condition)) {
            if ([DateTime]::UtcNow -gt $deadline) { throw "Timed out after $Seconds s waiting for: $Condition" }
            Start-Sleep -Milliseconds 200
        }
    }

    New-TestSandboxes @(
        @{ Name = 'life'; Label = @{ app = 'engine'; tier = 'web' }, 'gpu' }
        @{ Name = 'life-limit'; MaxDuration = 12; Label = @{ app = 'engine'; tier = 'batch' } }
        @{ Name = 'life-idle'; IdleTimeout = 4 }
    )
}

AfterAll {
    Get-Sandbox -Name 'life*', 'fleet-*', 'race' -ErrorAction Ignore | Remove-Sandbox -Force
}

Describe 'Labels and selectors' -Tag VM {
    It 'stores a valueless label as an empty value and selects on all terms' {
        $s = Get-Sandbox -Name life
        $s.Labels['gpu'] | Should -Be ''
        $s.Labels['app'] | Should -Be 'engine'
        (Get-Sandbox -Label app=engine).Name | Should -Be @('life', 'life-limit')
        (Get-Sandbox -Label app=engine, tier=web).Name | Should -Be 'life'
        (Get-Sandbox -Label 'app=engine,tier=batch'.Split(',')).Name | Should -Be 'life-limit'
        (Get-Sandbox -Label gpu).Name | Should -Be 'life'
        (Get-Sandbox -Label tier).Name | Should -Be @('life', 'life-limit')
        Get-Sandbox -Label app=engine, tier=none | Should -BeNullOrEmpty
    }

    It 'refuses reserved label prefixes before anything boots, with ReservedLabelKey' -TestCases @(
        @{ Key = 'sandbox.id' }, @{ Key = 'microsandbox.version' }, @{ Key = 'service.port' }
    ) {
        $r = Invoke-Captured { New-Sandbox -Name life-bad -Label @{ $Key = 'x' } }
        Get-ErrorId $r.Errors[0] | Should -Be 'ReservedLabelKey'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        $r.Errors[0].TargetObject | Should -Be $Key
        Get-Sandbox -Name life-bad -ErrorAction Ignore | Should -BeNullOrEmpty
    }

    It 'refuses a malformed selector on every state-changing cmdlet, with InvalidLabelSelector' -TestCases @(
        @{ Cmdlet = 'Start-Sandbox' }, @{ Cmdlet = 'Stop-Sandbox' }, @{ Cmdlet = 'Restart-Sandbox' }
        @{ Cmdlet = 'Remove-Sandbox' }, @{ Cmdlet = 'Wait-Sandbox' }, @{ Cmdlet = 'Get-SandboxLog' }
    ) {
        $confirm = @{}
        if ((Get-Command $Cmdlet).Parameters.ContainsKey('Confirm')) { $confirm.Confirm = $false }
        $r = Invoke-Captured { & $Cmdlet -Label '=engine' @confirm }
        Get-ErrorId $r.Errors[0] | Should -Be 'InvalidLabelSelector'
        $r.Errors[0].TargetObject | Should -Be '=engine'
        (Get-Sandbox -Name life).State | Should -Be 'Running'
    }
}

Describe 'State-changing cmdlets' -Tag VM {
    It 'take names with wildcards, labels and piped sandboxes; -WhatIf changes nothing' -TestCases @(
        @{ Cmdlet = 'Stop-Sandbox' }, @{ Cmdlet = 'Restart-Sandbox' }, @{ Cmdlet = 'Remove-Sandbox' }
    ) {
        $command = Get-Command $Cmdlet
        $command.ParameterSets.Name | Should -Be @('Name', 'InputObject', 'Label')
        $command.Parameters['Name'].Attributes.Where({ $_ -is [System.Management.Automation.SupportsWildcardsAttribute] }) | Should -Not -BeNullOrEmpty
        $before = Get-Sandbox -Name life
        & $Cmdlet -Name 'lif?' -WhatIf
        Get-Sandbox -Label tier=web | & $Cmdlet -WhatIf
        $after = Get-Sandbox -Name life
        $after.State | Should -Be 'Running'
        $after.RuntimePid | Should -Be $before.RuntimePid
    }

    It 'removes nothing under -WhatIf from a caller, even with -Force' {
        $before = Get-Sandbox -Name life
        & { $WhatIfPreference = $true; Remove-Sandbox -Name life -Force }
        function Remove-Through {
            [CmdletBinding(SupportsShouldProcess)] param()
            Remove-Sandbox -Name life -Force
        }
        Remove-Through -WhatIf
        $after = Get-Sandbox -Name life
        $after.State | Should -Be 'Running'
        $after.RuntimePid | Should -Be $before.RuntimePid
    }

    It 'prompts before removal, so a non-interactive session without -Confirm:$false removes nothing' {
        $child = Invoke-ChildPwsh 'Remove-Sandbox -Name life'
        $child.ExitCode | Should -Not -Be 0
        ($child.Output -join "`n") | Should -BeLike '*NonInteractive*'
        (Get-Sandbox -Name life).State | Should -Be 'Running'
    }

    It 'asks before removal: ConfirmImpact is High on Remove-Sandbox only' {
        $impact = { param($n) ($n.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $true)).ConfirmImpact }
        & $impact (Get-Command Remove-Sandbox) | Should -Be 'High'
        foreach ($name in 'Start-Sandbox', 'Stop-Sandbox', 'Restart-Sandbox') {
            & $impact (Get-Command $name) | Should -Not -Be 'High'
            (Get-Command $name).Parameters.Keys | Should -Contain 'PassThru'
            (Get-Command $name).Parameters.Keys | Should -Contain 'WhatIf'
        }
    }

    It 'restarts sandboxes by a comma-joined selector with their files kept; a name that matches nothing is an error of its own' {
        Invoke-SandboxCommand -Name life -Command 'echo kept > /root/kept' -ErrorAction Stop
        $before = Get-Sandbox -Name life
        $r = Invoke-Captured { Restart-Sandbox -Label 'app=engine,tier=web' -PassThru -WarningAction SilentlyContinue }
        $r.Errors | Should -BeNullOrEmpty
        $r.Output.Name | Should -Be 'life'
        $r.Output.State | Should -Be 'Running'
        $r.Output.RuntimePid | Should -Not -Be $before.RuntimePid
        $r.Output.StartedAt | Should -BeGreaterThan $before.StartedAt
        $r = Invoke-Captured { Restart-Sandbox -Name nothing-here -PassThru }
        $r.Output | Should -BeNullOrEmpty
        $r.Errors | Should -HaveCount 1
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotFound'
        $r.Errors[0].TargetObject | Should -Be 'nothing-here'
        Invoke-SandboxCommand -Name life -Command 'cat /root/kept' | Should -Be 'kept'
        Test-ProcessRunning $before.RuntimePid | Should -BeFalse
    }

    It 'does nothing, without an error, when stopping a stopped sandbox or starting a running one' {
        $s = Get-Sandbox -Name life
        (Invoke-Captured { Start-Sandbox -Name life }).Errors | Should -BeNullOrEmpty
        (Get-Sandbox -Name life).RuntimePid | Should -Be $s.RuntimePid
    }
}

Describe 'Crashes' -Tag VM {
    It 'shows Crashed with the reason when the VMM is killed, and starts again' {
        $s = Get-Sandbox -Name life
        $vmm = (Get-Content (Join-Path $s.Directory 'status.json') -Raw | ConvertFrom-Json).vmmPid
        Stop-Process -Id $vmm -Force
        Wait-Until { (Get-Sandbox -Name life).State -eq 'Crashed' } 20
        $crashed = Get-Sandbox -Name life
        $crashed.Reason | Should -BeLike "*VMM (pid $vmm) was killed by signal 9*"
        Test-ProcessRunning $s.RuntimePid | Should -BeFalse

        $again = Start-Sandbox -Name life -PassThru -Verbose -WarningAction SilentlyContinue 4>&1
        ($again | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message |
            Should -Contain "Starting sandbox 'life' again after it crashed: $($crashed.Reason)"
        ($again | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }).State | Should -Be 'Running'
        Invoke-SandboxCommand -Name life -Command 'cat /root/kept' | Should -Be 'kept'
    }

    It 'shows Stopping while a guest that does not answer has its -Timeout, then kills its VM and says so; a start waits for it' {
        $s = Get-Sandbox -Name life
        $vmm = (Get-Content (Join-Path $s.Directory 'status.json') -Raw | ConvertFrom-Json).vmmPid
        # A frozen VMM: the guest never powers off, so only the kill after the timeout ends it.
        & kill -STOP $vmm
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:MSB_TEST_MODULE_PATH).AddStatement()
            $null = $ps.AddCommand('Stop-Sandbox').AddParameter('Name', 'life').AddParameter('Timeout', 3).AddParameter('PassThru')
            $async = $ps.BeginInvoke()
            Wait-Until { (Get-Sandbox -Name life).State -eq 'Stopping' } 20
            # A start asked for meanwhile waits for the stop under way, then boots.
            $again = Start-Sandbox -Name life -PassThru -Verbose -WarningAction SilentlyContinue 4>&1
            $stopped = $ps.EndInvoke($async)
        }
        finally {
            $ps.Dispose()
        }

        $stopped.State | Should -Be 'Stopped'
        $stopped.Reason | Should -BeLike '*(killed after the stop timeout)'
        Test-ProcessRunning $vmm | Should -BeFalse
        Test-ProcessRunning $s.RuntimePid | Should -BeFalse
        ($again | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message |
            Should -Contain "Waiting for another operation on sandbox 'life' to finish."
        ($again | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }).State | Should -Be 'Running'
        Invoke-SandboxCommand -Name life -Command 'cat /root/kept' | Should -Be 'kept'
    }
}

Describe 'Limits the runtime enforces' -Tag VM {
    It 'stops a sandbox at its maximum duration, on every start; Wait-Sandbox returns it with the reason' {
        $first = Wait-Sandbox -Name life-limit -Timeout 120 -PassThru
        $first.State | Should -Be 'Stopped'
        $first.Reason | Should -Be 'Stopped because it reached its maximum duration of 12 s.'

        $again = Start-Sandbox -Name life-limit -PassThru -WarningAction SilentlyContinue
        $again.MaxDuration | Should -Be ([TimeSpan]::FromSeconds(12))
        $r = Invoke-Captured { Wait-Sandbox -Name life-limit -Timeout 1 }
        Get-ErrorId $r.Errors[0] | Should -Be 'WaitSandboxTimeout'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'OperationTimeout'
        $r.Errors[0].TargetObject | Should -Be 'life-limit'

        # -Wait follows the runtime's log until the sandbox has stopped, so it ends by itself.
        $log = Get-SandboxLog -Name life-limit -Kind Runtime -Wait
        @($log | Where-Object { $_ -like '*stopping: it reached its maximum duration of 12 s' }) | Should -HaveCount 2
        (Get-Sandbox -Name life-limit).State | Should -Be 'Stopped'
    }

    It 'stops a sandbox that has been idle, counting a running command as activity' {
        $first = Wait-Sandbox -Name life-idle -Timeout 120 -PassThru
        $first.State | Should -Be 'Stopped'
        $first.Reason | Should -Be 'Stopped because it was idle for 4 s.'

        Start-Sandbox -Name life-idle -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-SandboxCommand -Name life-idle -Command 'sleep 6; echo done' -ErrorAction Stop | Should -Be 'done'
        # The command ran longer than the idle timeout, and the sandbox was kept for it.
        (Get-Sandbox -Name life-idle).State | Should -Be 'Running'
        $done = Wait-Sandbox -Name life-idle -Timeout 60 -PassThru
        $done.State | Should -Be 'Stopped'
        $done.Reason | Should -Be 'Stopped because it was idle for 4 s.'
    }

    It 'stops an -Attached sandbox when its pwsh exits, and keeps a detached one running' {
        $child = Invoke-ChildPwsh @'
$a = New-Sandbox -Name life-attached -Attached -MemoryMB 128 -WarningAction SilentlyContinue
$d = New-Sandbox -Name life-detached -MemoryMB 128 -WarningAction SilentlyContinue
"$($a.Attached) $($a.AttachedProcessId -eq $PID) $($d.Attached)"
'@
        $child.ExitCode | Should -Be 0 -Because ($child.Output -join "`n")
        $child.Output[-1] | Should -Be 'True True False'
        $done = Wait-Sandbox -Name life-attached -Timeout 60 -PassThru
        $done.State | Should -Be 'Stopped'
        $done.Reason | Should -BeLike 'Stopped because the process it was attached to (pid *) exited.'
        (Get-Sandbox -Name life-detached).State | Should -Be 'Running'
    }

    It 'stops an -Attached sandbox when its pwsh is killed' {
        $pwsh = (Get-Process -Id $PID).Path
        $prefix = @(if ($pwsh -match 'dotnet(\.exe)?$') { "$PSHOME/pwsh.dll" })
        $script = "Import-Module '$($env:MSB_TEST_MODULE_PATH)'; " +
            "`$null = New-Sandbox -Name life-killed -Attached -MemoryMB 128 -WarningAction SilentlyContinue; " +
            'Start-Sleep -Seconds 600'
        $process = Start-Process $pwsh -ArgumentList (@($prefix) + '-NoProfile', '-NonInteractive', '-Command', $script) -PassThru
        try {
            Wait-Until { (Get-Sandbox -Name life-killed -ErrorAction Ignore).State -eq 'Running' } 120
            (Get-Sandbox -Name life-killed).AttachedProcessId | Should -Be $process.Id
        }
        finally {
            Stop-Process -Id $process.Id -Force
        }

        $done = Wait-Sandbox -Name life-killed -Timeout 60 -PassThru
        $done.State | Should -Be 'Stopped'
        $done.Reason | Should -Be "Stopped because the process it was attached to (pid $($process.Id)) exited."
        $done.AttachedProcessId | Should -BeNullOrEmpty
    }
}

Describe 'Logs' -Tag VM {
    It 'reads the console of the boot, the runtime log and the command log, and their last lines' {
        Invoke-SandboxCommand -Name life -Command 'echo logged; exit 3' -ErrorAction Ignore | Out-Null
        Get-SandboxLog -Name life | Where-Object { $_ -like 'msb-agent: ready in * ms*' } | Should -Not -BeNullOrEmpty
        $runtime = Get-SandboxLog -Name life -Kind Runtime
        @($runtime | Where-Object { $_ -like '*agent ready in * ms' }).Count | Should -BeGreaterOrEqual 2
        $commands = Get-SandboxLog -Name life -Kind Command -Tail 2
        $commands | Should -HaveCount 2
        $commands[0] | Should -Match "\[\d+\] started: (\(.*\) )?/bin/sh -c 'echo logged; exit 3'$"
        $commands[1] | Should -Match '\[\d+\] exited 3 after \d+\.\d{3} s$'
        $commands[0].SandboxName | Should -Be 'life'
        $commands[0].LogKind | Should -Be 'Command'
        Get-SandboxLog -Name life -Tail 0 | Should -BeNullOrEmpty
    }

    It 'follows the console log with -Wait until the sandbox stops' {
        $job = Start-ThreadJob -ScriptBlock {
            param($module)
            Import-Module $module
            Get-SandboxLog -Name life -Tail 0 -Wait
        } -ArgumentList $env:MSB_TEST_MODULE_PATH
        Start-Sleep -Seconds 2
        Invoke-SandboxCommand -Name life -Command 'echo followed-line > /dev/console' -ErrorAction Stop
        Stop-Sandbox -Name life -ErrorAction Stop
        $lines = @($job | Wait-Job -Timeout 60 | Receive-Job)
        $job.State | Should -Be 'Completed'
        Remove-Job $job -Force
        $lines | Should -Contain 'followed-line'
    }
}

Describe 'Created without starting' -Tag VM {
    BeforeAll {
        $script:Source = Join-Path ([IO.Path]::GetTempPath()) "msb-nostart-$PID.txt"
        Set-Content $script:Source 'copied at first start'
    }

    AfterAll {
        Remove-Item $script:Source, "$script:Source.away" -ErrorAction Ignore
    }

    It 'records a sandbox as Created with no VM; commands refuse it, stop and wait have nothing to do' {
        $qemu = @(Get-QemuPid)
        $s = New-Sandbox -Name life-created -NoStart -Label @{ pool = 'night' } -Script @{ job = 'echo job ran' } -Patch @(
            @{ Append = '/etc/hosts'; Content = "10.1.2.3 later`n" }
            @{ Copy = $script:Source; Destination = '/opt/copied.txt' }
        ) -ErrorAction Stop
        $s.State | Should -Be 'Created'
        $s.RuntimePid | Should -BeNullOrEmpty
        (Get-Sandbox -Label pool=night).State | Should -Be 'Created'
        @(Get-QemuPid | Where-Object { $_ -notin $qemu }) | Should -BeNullOrEmpty
        Test-Path (Join-Path $s.Directory 'setup.json') | Should -BeTrue

        $r = Invoke-Captured { Invoke-SandboxCommand -Name life-created -Command 'true' }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
        $r.Errors[0].TargetObject | Should -Be 'life-created'
        (Invoke-Captured { Stop-Sandbox -Name life-created }).Errors | Should -BeNullOrEmpty
        (Wait-Sandbox -Name life-created -Timeout 5 -PassThru).State | Should -Be 'Created'
    }

    It 'puts the root back after a first setup that fails, and applies all of it once on the next start' {
        Move-Item $script:Source "$script:Source.away"
        $r = Invoke-Captured { Start-Sandbox -Name life-created -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be 'PatchFailed'
        $r.Errors[0].TargetObject.Path | Should -Be '/opt/copied.txt'
        $failed = Get-Sandbox -Name life-created
        $failed.State | Should -Be 'Crashed'
        $failed.Reason | Should -BeLike "The CopyFromHost patch of '/opt/copied.txt' failed:*"

        Move-Item "$script:Source.away" $script:Source
        $started = Start-Sandbox -Name life-created -PassThru -WarningAction SilentlyContinue -ErrorAction Stop
        $started.State | Should -Be 'Running'
        # The append went in before the copy failed; one line now shows the first attempt was undone.
        Invoke-SandboxCommand -Name life-created -Command 'job; grep -c 10.1.2.3 /etc/hosts; cat /opt/copied.txt' |
            Should -Be @('job ran', '1', 'copied at first start')
        Test-Path (Join-Path $started.Directory 'setup.json') | Should -BeFalse
    }

    It 'refuses -Attached with -NoStart, creating nothing' {
        $r = Invoke-Captured { New-Sandbox -Name life-created-attached -NoStart -Attached }
        Get-ErrorId $r.Errors[0] | Should -Be 'AttachedWithoutStart'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        Get-Sandbox -Name life-created-attached -ErrorAction Ignore | Should -BeNullOrEmpty
    }
}

Describe 'Fleets' -Tag VM {
    BeforeAll {
        New-TestSandboxes @(1..8 | ForEach-Object { @{ Name = "fleet-$_"; Label = @{ fleet = 'bulk' } } })
    }

    It 'stops 8 sandboxes by label in one call, in parallel' {
        $running = Get-Sandbox -Label fleet=bulk
        $running | Should -HaveCount 8
        $running.State | Sort-Object -Unique | Should -Be 'Running'
        # Two frozen VMMs never power off, so each stays Stopping for its whole -Timeout: seeing both
        # Stopping at once shows the stops overlap, where one after another could never show it.
        $frozen = 'fleet-1', 'fleet-8' | ForEach-Object {
            (Get-Content (Join-Path (Get-Sandbox -Name $_).Directory 'status.json') -Raw | ConvertFrom-Json).vmmPid
        }
        & kill -STOP @frozen
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddCommand('Import-Module').AddParameter('Name', $env:MSB_TEST_MODULE_PATH).AddStatement()
            $null = $ps.AddScript('Get-Sandbox -Label fleet=bulk | Stop-Sandbox -Timeout 8 -PassThru')
            $async = $ps.BeginInvoke()
            Wait-Until { @(Get-Sandbox -Name fleet-1, fleet-8 | Where-Object State -EQ 'Stopping').Count -eq 2 } 30
            $stopped = $ps.EndInvoke($async)
            $ps.Streams.Error | Should -BeNullOrEmpty
        }
        finally {
            $ps.Dispose()
        }

        $stopped | Should -HaveCount 8
        ($stopped.Name | Sort-Object) | Should -Be ($running.Name | Sort-Object)
        $stopped.State | Sort-Object -Unique | Should -Be 'Stopped'
        foreach ($s in $stopped) {
            $s.Reason | Should -Be ($s.Name -in 'fleet-1', 'fleet-8' ?
                'stopped by request (killed after the stop timeout)' : 'stopped by request')
        }
        foreach ($s in $running) { Test-ProcessRunning $s.RuntimePid | Should -BeFalse }
        foreach ($vmm in $frozen) { Test-ProcessRunning $vmm | Should -BeFalse }
    }

    It 'waits for stopped sandboxes by wildcard, label and pipeline, returning at once' {
        (Wait-Sandbox -Name 'fleet-[1-3]' -PassThru).Name | Sort-Object | Should -Be @('fleet-1', 'fleet-2', 'fleet-3')
        $byLabel = Wait-Sandbox -Label fleet=bulk -Timeout 10 -PassThru
        $byLabel | Should -HaveCount 8
        $byLabel.State | Sort-Object -Unique | Should -Be 'Stopped'
        (Get-Sandbox -Name fleet-4 | Wait-Sandbox -PassThru).Name | Should -Be 'fleet-4'
    }

    It 'boots a sandbox once when two processes start it at once' {
        $module = $env:MSB_TEST_MODULE_PATH
        $jobs = 1..2 | ForEach-Object {
            Start-Job -ScriptBlock {
                Import-Module $using:module
                (Start-Sandbox -Name fleet-1 -PassThru -WarningAction SilentlyContinue -ErrorAction Stop).RuntimePid
            }
        }
        $pids = @($jobs | Wait-Job -Timeout 180 | Receive-Job)
        $jobs | Remove-Job -Force
        $pids | Should -HaveCount 2
        $pids[0] | Should -Be $pids[1]
        $s = Get-Sandbox -Name fleet-1
        $s.State | Should -Be 'Running'
        $s.RuntimePid | Should -Be $pids[0]
        @(Get-QemuPid | Where-Object { (Get-Process -Id $_).CommandLine -like "*$($s.Directory)*" }) | Should -HaveCount 1
    }

    It 'starts them again by wildcard and by pipeline, and removal reports each running one on its own' {
        Start-Sandbox -Name 'fleet-[2-4]' -WarningAction SilentlyContinue -ErrorAction Stop
        (Get-Sandbox -Name 'fleet-[1-4]').State | Sort-Object -Unique | Should -Be 'Running'
        $started = Get-Sandbox -Label fleet=bulk | Start-Sandbox -PassThru -WarningAction SilentlyContinue
        $started | Should -HaveCount 8
        $started.State | Sort-Object -Unique | Should -Be 'Running'
        $killed = Stop-Sandbox -Name 'fleet-[1-4]' -Force -PassThru -Verbose 4>&1
        ($killed | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message |
            Should -Contain "Killing the VM of 'fleet-2' at once (runtime pid $(($started | Where-Object Name -EQ 'fleet-2').RuntimePid)), with no graceful shutdown."
        $killed = $killed | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $killed | Should -HaveCount 4
        $killed.Reason | Sort-Object -Unique | Should -Be 'stopped by request (killed at once, with no graceful shutdown)'

        Start-Sandbox -Name 'fleet-[1-4]' -WhatIf
        (Get-Sandbox -Name 'fleet-[1-4]').State | Sort-Object -Unique | Should -Be 'Stopped'

        $r = Invoke-Captured { Remove-Sandbox -Label fleet=bulk -Confirm:$false }
        $r.Errors | Should -HaveCount 4
        $r.Errors | ForEach-Object { Get-ErrorId $_ } | Sort-Object -Unique | Should -Be 'SandboxRunning'
        ($r.Errors.TargetObject | Sort-Object) | Should -Be @('fleet-5', 'fleet-6', 'fleet-7', 'fleet-8')
        (Get-Sandbox -Label fleet=bulk).Name | Should -Be @('fleet-5', 'fleet-6', 'fleet-7', 'fleet-8')

        Get-Sandbox -Label fleet=bulk | Remove-Sandbox -Force
        Get-Sandbox -Label fleet=bulk | Should -BeNullOrEmpty
    }

    It 'gives one sandbox and one clear error when two sessions create the same name at once' {
        $module = $env:MSB_TEST_MODULE_PATH
        # Two pwsh processes, as two users' sessions would be.
        $jobs = 1..2 | ForEach-Object {
            Start-Job -ScriptBlock {
                Import-Module $using:module
                $e = $null
                $s = New-Sandbox -Name race -MemoryMB 128 -WarningAction SilentlyContinue -ErrorVariable e -ErrorAction SilentlyContinue
                # A string, never nothing: an empty if-value crosses the job boundary as an empty object.
                [pscustomobject]@{ Made = [bool]$s; Error = [string]$(if ($e) { ($e[0].FullyQualifiedErrorId -split ',')[0] }) }
            }
        }
        $results = @($jobs | Wait-Job -Timeout 180 | Receive-Job)
        $jobs | Remove-Job -Force
        $results | Should -HaveCount 2
        @($results | Where-Object Made) | Should -HaveCount 1
        @($results | Where-Object Error).Error | Should -Be 'SandboxAlreadyExists'
        @(Get-Sandbox -Name race) | Should -HaveCount 1
        (Get-Sandbox -Name race).State | Should -Be 'Running'
    }

    It 'replaces a running sandbox after a graceful stop, with a new root' {
        $old = Get-Sandbox -Name race
        Invoke-SandboxCommand -Name race -Command 'echo old > /root/mark' -ErrorAction Stop
        $made = New-Sandbox -Name race -Replace -ReplaceTimeout 20 -MemoryMB 128 -Label @{ gen = '2' } `
            -WarningAction SilentlyContinue -ErrorAction Stop -Verbose 4>&1
        $said = ($made | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message
        $said | Should -Contain "Asking the guest of 'race' to shut down; the VM is killed if it has not within 20 s."
        $said | Where-Object { $_ -like 'Killing the VM*' } | Should -BeNullOrEmpty
        $new = $made | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $new.Id | Should -Not -Be $old.Id
        $new.State | Should -Be 'Running'
        $new.Labels['gen'] | Should -Be '2'
        Test-ProcessRunning $old.RuntimePid | Should -BeFalse
        Test-Path $old.Directory | Should -BeFalse
        Invoke-SandboxCommand -Name race -Command 'test -e /root/mark || echo fresh' | Should -Be 'fresh'
    }

    It 'leaves no QEMU behind once the sandboxes here are removed' {
        Get-Sandbox -Name 'life*', 'fleet-*', 'race' -ErrorAction Ignore | Remove-Sandbox -Force
        Wait-Until { -not (Get-QemuPid | Where-Object { $_ -notin $script:QemuBefore }) } 20
    }
}
