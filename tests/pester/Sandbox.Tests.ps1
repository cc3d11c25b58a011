#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Real microVMs: every sandbox here boots a Linux kernel under QEMU (TCG emulation on hosts
# without a usable KVM, so boots take seconds). Sandboxes are shared across tests where the
# test allows, and independent boots run in parallel jobs.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $script:QemuBefore = Get-QemuPid

    # Two sandboxes boot at once, each from its own pwsh process that exits afterwards: the
    # tests below then also show that sandboxes outlive the session that made them.
    $demo = Start-Job -ScriptBlock {
        param($module)
        Import-Module $module
        New-Sandbox -Name demo -WarningAction SilentlyContinue |
            Invoke-SandboxCommand -Command 'uname -a; cat /proc/cpuinfo | grep -c processor'
    } -ArgumentList $env:MSB_TEST_MODULE_PATH
    $multi = Start-Job -ScriptBlock {
        param($module)
        Import-Module $module
        $null = New-Sandbox -Name multi -Cpus 2 -MemoryMB 256 -WorkingDirectory /tmp `
            -Environment @{ GREETING = 'hello'; SHARED = 'sandbox' } `
            -Label @{ app = 'engine'; 'user.id' = 'alice' }, gpu -WarningAction SilentlyContinue
    } -ArgumentList $env:MSB_TEST_MODULE_PATH
    $script:DemoOutput = @(Receive-Job $demo -Wait -AutoRemoveJob -ErrorAction Stop)
    Receive-Job $multi -Wait -AutoRemoveJob -ErrorAction Stop
}

AfterAll {
    Get-Sandbox | Remove-Sandbox -Force
    Remove-Module Microsandbox -ErrorAction Ignore
}

Describe 'The first sandbox, end to end' -Tag VM {
    It 'runs the README pipeline inside a microVM with its own kernel' {
        $script:DemoOutput[0] | Should -Match '^Linux demo \S+ .*x86_64'
        $script:DemoOutput[1] | Should -Be '1'
        # The guest kernel is Debian's, not the host's.
        $script:DemoOutput[0] | Should -Match '-amd64'
    }

    It 'lists sandboxes made by another process, with their properties' {
        $s = Get-Sandbox -Name multi
        $s.Name | Should -Be 'multi'
        $s.State | Should -Be 'Running'
        $s.Image | Should -Be 'default'
        $s.Cpus | Should -Be 2
        $s.MemoryMB | Should -Be 256
        $s.Labels['app'] | Should -Be 'engine'
        $s.Labels['user.id'] | Should -Be 'alice'
        $s.Labels['gpu'] | Should -Be ''
        $s.Accelerator | Should -BeIn 'kvm', 'tcg'
        $s.CreatedAt | Should -BeLessThan ([DateTimeOffset]::UtcNow)
        (Get-Process -Id $s.RuntimePid).ProcessName | Should -Be 'msb-runtime'
    }

    It 'gives the guest the CPUs asked for' -ForEach @(
        @{ Name = 'demo'; Cpus = 1 }, @{ Name = 'multi'; Cpus = 2 }
    ) {
        Invoke-SandboxCommand -Name $Name -Command 'nproc' | Should -Be "$Cpus"
    }

    It 'gives the guest the memory asked for, less the kernel reserve' -ForEach @(
        @{ Name = 'demo'; MemoryMB = 512 }, @{ Name = 'multi'; MemoryMB = 256 }
    ) {
        $line = Invoke-SandboxCommand -Name $Name -Command 'grep MemTotal /proc/meminfo'
        $kb = [int]($line -replace '[^0-9]', '')
        $kb | Should -BeLessOrEqual ($MemoryMB * 1024)
        $kb | Should -BeGreaterThan ($MemoryMB * 1024 * 0.7)
    }

    It 'passes the sandbox environment, with per-command additions winning' {
        Invoke-SandboxCommand -Name multi -Command 'echo "$GREETING $SHARED"' | Should -Be 'hello sandbox'
        Invoke-SandboxCommand -Name multi -Command 'echo "$GREETING $SHARED"' -Environment @{ SHARED = 'cmd' } |
            Should -Be 'hello cmd'
    }

    It 'runs in the sandbox working directory unless the command names one' {
        Invoke-SandboxCommand -Name multi -Command 'pwd' | Should -Be '/tmp'
        Invoke-SandboxCommand -Name multi -Command 'pwd' -WorkingDirectory /proc | Should -Be '/proc'
    }

    It 'runs a program with arguments without a shell' {
        Invoke-SandboxCommand -Name demo -FilePath /bin/echo -ArgumentList 'a  b', 'c' | Should -Be 'a  b c'
        Invoke-SandboxCommand -Name demo -FilePath sh -ArgumentList '-c', 'echo "[$1]"', 'x', 'one two' |
            Should -Be '[one two]'
    }

    It 'keeps stderr apart from stdout' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'echo out; echo err >&2' }
        $r.Output | Should -Be @('out')
        $r.Errors.Count | Should -Be 1
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxCommandStderr'
        $r.Errors[0].Exception.Message | Should -Be 'err'
        $r.Errors[0].TargetObject | Should -Be 'demo'

        $result = Invoke-SandboxCommand -Name demo -Command 'echo out; echo err >&2' -PassThru
        $result.Stdout | Should -Be "out`n"
        $result.Stderr | Should -Be "err`n"
    }

    It 'makes a non-zero exit visible' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'exit 7' }
        $LASTEXITCODE | Should -Be 7
        Get-ErrorId $r.Errors[-1] | Should -Be 'SandboxCommandFailed'
        $r.Errors[-1].CategoryInfo.Category | Should -Be 'InvalidResult'

        $result = Invoke-SandboxCommand -Name demo -Command 'exit 7' -PassThru
        $result.ExitCode | Should -Be 7
        $result.Succeeded | Should -BeFalse
        $result.Duration | Should -BeGreaterThan ([TimeSpan]::Zero)
        Invoke-SandboxCommand -Name demo -Command 'true'
        $LASTEXITCODE | Should -Be 0
    }

    It 'stops the command, and its guest process, when an error stops the pipeline' {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        { Invoke-SandboxCommand -Name demo -Command 'echo oops >&2; sleep 30' -ErrorAction Stop } |
            Should -Throw -ErrorId 'SandboxCommandStderr,Microsandbox.PowerShell.InvokeSandboxCommandCommand'
        $clock.Elapsed.TotalSeconds | Should -BeLessThan 20
        Start-Sleep -Milliseconds 500
        Invoke-SandboxCommand -Name demo -Command 'ps | grep -c "[s]leep 30" || true' | Should -Be '0'
    }

    It 'streams output lines as they arrive' {
        $stamps = Invoke-SandboxCommand -Name demo -Command 'echo first; sleep 2; echo second' |
            ForEach-Object { [pscustomobject]@{ Line = $_; At = [DateTime]::UtcNow } }
        $stamps.Line | Should -Be @('first', 'second')
        ($stamps[1].At - $stamps[0].At).TotalSeconds | Should -BeGreaterThan 1
    }

    It 'runs several commands at once in one sandbox' {
        $jobs = 1..3 | ForEach-Object {
            Start-ThreadJob -ScriptBlock {
                param($module, $n)
                Import-Module $module
                Invoke-SandboxCommand -Name demo -Command "sleep 1; echo job$n"
            } -ArgumentList $env:MSB_TEST_MODULE_PATH, $_
        }
        $jobs | Receive-Job -Wait -AutoRemoveJob | Sort-Object | Should -Be @('job1', 'job2', 'job3')
    }

    It 'reports a program that does not exist' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -FilePath /no/such/program }
        Get-ErrorId $r.Errors[0] | Should -Be 'CommandNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'reports a command string naming no program as CommandNotFound, after the shell says which' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'echo before; no-such-program-here --x' }
        $r.Output | Should -Be 'before'
        $LASTEXITCODE | Should -Be 127
        $r.Errors | Should -HaveCount 2
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxCommandStderr'
        "$($r.Errors[0])" | Should -BeLike '*no-such-program-here*not found*'
        Get-ErrorId $r.Errors[1] | Should -Be 'CommandNotFound'
        $r.Errors[1].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[1].TargetObject | Should -Be 'demo'
        # Any other failing exit stays SandboxCommandFailed.
        Get-ErrorId (Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'exit 3' }).Errors[0] |
            Should -Be 'SandboxCommandFailed'
    }

    It 'reports a working directory that does not exist' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'pwd' -WorkingDirectory /no/such/dir }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'WorkingDirectoryNotFound'
    }

    It 'selects sandboxes by label, all terms matching' {
        (Get-Sandbox -Label app=engine).Name | Should -Be 'multi'
        (Get-Sandbox -Label 'app=engine', 'user.id=alice').Name | Should -Be 'multi'
        (Get-Sandbox -Label gpu).Name | Should -Be 'multi'
        Get-Sandbox -Label 'app=engine', 'user.id=bob' | Should -BeNullOrEmpty
        (Get-Sandbox -Name 'mu*').Name | Should -Be 'multi'
        Get-Sandbox -Name 'MU*' | Should -BeNullOrEmpty
    }

    It 'lets a second pwsh process use and remove a sandbox' {
        $child = Invoke-ChildPwsh @'
Get-Sandbox -Name multi | Invoke-SandboxCommand -Command 'echo from-child'
Get-Sandbox -Name multi | Remove-Sandbox -Force
'@
        $child.ExitCode | Should -Be 0 -Because ($child.Output -join "`n")
        $child.Output | Should -Contain 'from-child'
        $r = Invoke-Captured { Get-Sandbox -Name multi }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotFound'
    }

    It 'stops gracefully, does nothing on a second stop, and starts again with its files' {
        Invoke-SandboxCommand -Name demo -Command 'echo kept > /root/kept'
        $before = Get-Sandbox -Name demo
        $stopped = Stop-Sandbox -Name demo -PassThru
        $stopped.State | Should -Be 'Stopped'
        $stopped.RuntimePid | Should -BeNullOrEmpty
        Test-ProcessRunning $before.RuntimePid | Should -BeFalse

        $again = Invoke-Captured { Stop-Sandbox -Name demo }
        $again.Errors | Should -BeNullOrEmpty

        $r = Invoke-Captured { Invoke-SandboxCommand -Name demo -Command 'true' }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidOperation'

        (Get-Sandbox -Name demo | Start-Sandbox -PassThru -WarningAction SilentlyContinue).State |
            Should -Be 'Running'
        Invoke-SandboxCommand -Name demo -Command 'echo back' | Should -Be 'back'
        Invoke-SandboxCommand -Name demo -Command 'cat /root/kept' | Should -Be 'kept'
    }

    It 'refuses a duplicate name and replaces on request' {
        $old = Get-Sandbox -Name demo
        $r = Invoke-Captured { New-Sandbox -Name demo -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxAlreadyExists'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        $r.Errors[0].TargetObject | Should -Be 'demo'
        (Get-Sandbox -Name demo).Id | Should -Be $old.Id

        $made = New-Sandbox -Name demo -Replace -ReplaceTimeout 0 -Shell /bin/ash -WarningAction SilentlyContinue `
            -ErrorAction Stop -Verbose 4>&1
        ($made | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message |
            Should -Contain "Killing the VM of 'demo' at once (runtime pid $($old.RuntimePid)), with no graceful shutdown."
        $new = $made | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $new.Id | Should -Not -Be $old.Id
        $new.State | Should -Be 'Running'
        $new.Shell | Should -Be '/bin/ash'
        Test-ProcessRunning $old.RuntimePid | Should -BeFalse
        # Command strings run under the sandbox's shell, which names itself in $0.
        Invoke-SandboxCommand -Name demo -Command 'echo $0' | Should -Be '/bin/ash'
        # A new sandbox of the same image starts from the image, not from its predecessor's writes.
        Invoke-SandboxCommand -Name demo -Command 'test -e /root/kept && echo leaked || echo fresh' |
            Should -Be 'fresh'
    }

    It 'keeps the root copy-on-write: a shared read-only base and a sparse upper disk of its own' {
        $s = Get-Sandbox -Name demo
        Invoke-SandboxCommand -Name demo -Command 'grep " / " /proc/mounts' | Should -Match '^overlay / overlay '
        Invoke-SandboxCommand -Name demo -Command 'touch /bin/busybox-is-writable && echo ok' | Should -Be 'ok'
        $upper = Get-Item (Join-Path $s.Directory 'upper.img')
        $allocated = [long](& du -k --block-size=1 $upper.FullName).Split("`t")[0]
        $allocated | Should -BeLessThan ($upper.Length / 10)
        @(Get-ChildItem (Join-Path $env:MSB_HOME 'cache/images') -Filter 'default-*.erofs').Count | Should -Be 1
    }

    It 'takes the VM down with a killed runtime and shows the sandbox Crashed' {
        $s = Get-Sandbox -Name demo
        $vmm = (Get-Content (Join-Path $s.Directory 'status.json') -Raw | ConvertFrom-Json).vmmPid
        Test-ProcessRunning $vmm | Should -BeTrue
        Stop-Process -Id $s.RuntimePid -Force
        $deadline = [DateTime]::UtcNow.AddSeconds(10)
        while ((Test-ProcessRunning $vmm) -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 100 }
        Test-ProcessRunning $vmm | Should -BeFalse
        $crashed = Get-Sandbox -Name demo
        $crashed.State | Should -Be 'Crashed'
        $crashed.Reason | Should -Be 'The sandbox runtime process ended unexpectedly (it was killed or crashed).'
        $crashed.RuntimePid | Should -BeNullOrEmpty

        $again = Start-Sandbox -Name demo -PassThru -WarningAction SilentlyContinue -ErrorAction Stop
        $again.State | Should -Be 'Running'
        $again.Reason | Should -BeNullOrEmpty
        Invoke-SandboxCommand -Name demo -Command 'echo $0' | Should -Be '/bin/ash'
    }

    It 'leaves no QEMU behind once every sandbox is removed' {
        Get-Sandbox | Remove-Sandbox -Force
        Get-Sandbox | Should -BeNullOrEmpty
        Get-QemuPid | Where-Object { $_ -notin $script:QemuBefore } | Should -BeNullOrEmpty
    }
}
