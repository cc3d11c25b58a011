#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Bad input gets a stable error id, the right category and the offending object as target,
# and leaves nothing behind.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
}

AfterAll {
    Remove-Module Microsandbox -ErrorAction Ignore
}

Describe 'New-Sandbox rejects bad input' -Tag Errors {
    It 'rejects <Case>' -ForEach @(
        @{ Case = 'an empty name'; Params = @{ Name = '' }; Id = 'SandboxNameEmpty'; Target = '' }
        @{ Case = 'a name over 128 UTF-8 bytes'; Params = @{ Name = 'é' * 65 }; Id = 'SandboxNameTooLong'
            Target = 'é' * 65 }
        @{ Case = 'a reserved label prefix'; Params = @{ Name = 'bad-label'; Label = @{ 'sandbox.id' = 'x' } }
            Id = 'ReservedLabelKey'; Target = 'sandbox.id' }
        @{ Case = 'the microsandbox. prefix'; Params = @{ Name = 'bad-label2'; Label = 'microsandbox.x=1' }
            Id = 'ReservedLabelKey'; Target = 'microsandbox.x' }
        @{ Case = 'the service. prefix'; Params = @{ Name = 'bad-label3'; Label = 'service.port' }
            Id = 'ReservedLabelKey'; Target = 'service.port' }
        @{ Case = 'zero CPUs'; Params = @{ Name = 'bad-cpu'; Cpus = 0 }; Id = 'InvalidCpuCount'; Target = 0 }
        @{ Case = 'negative memory'; Params = @{ Name = 'bad-mem'; MemoryMB = -1 }; Id = 'InvalidMemorySize'
            Target = -1 }
        @{ Case = 'an uncached image that may not be pulled'
            Params = @{ Name = 'bad-image'; Image = 'nosuchimage'; PullPolicy = 'Never' }; Id = 'ImageNotFound'
            Target = 'nosuchimage' }
    ) {
        $r = Invoke-Captured { New-Sandbox @Params }
        $r.Errors.Count | Should -Be 1
        Get-ErrorId $r.Errors[0] | Should -Be $Id
        $r.Errors[0].FullyQualifiedErrorId | Should -Be "$Id,Microsandbox.PowerShell.NewSandboxCommand"
        $r.Errors[0].TargetObject | Should -Be $Target
        $expected = if ($Id -eq 'ImageNotFound') { 'ObjectNotFound' } else { 'InvalidArgument' }
        $r.Errors[0].CategoryInfo.Category | Should -Be $expected
        $r.Output | Should -BeNullOrEmpty
        Get-Sandbox | Where-Object Name -EQ $Params.Name | Should -BeNullOrEmpty
    }

    It 'names the QEMU package to install when QEMU is missing' -Tag Linux {
        $saved = $env:MSB_QEMU
        try {
            $env:MSB_QEMU = '/nonexistent/qemu-system-x86_64'
            $r = Invoke-Captured { New-Sandbox -Name no-qemu }
            Get-ErrorId $r.Errors[0] | Should -Be 'QemuNotFound'
            $r.Errors[0].CategoryInfo.Category | Should -Be 'NotInstalled'
            $r.Errors[0].ErrorDetails.RecommendedAction | Should -Match 'apt-get install qemu-system-x86'
            Get-Sandbox -Name no-qemu -ErrorAction Ignore | Should -BeNullOrEmpty

            $checks = Test-SandboxHost
            ($checks | Where-Object Check -EQ 'QEMU').Status | Should -Be 'Fail'
            Test-SandboxHost -Quiet | Should -BeFalse
        }
        finally {
            $env:MSB_QEMU = $saved
        }
    }

    It 'fails a guest that is never ready with the console tail, leaving nothing behind' -Tag VM {
        $before = Get-QemuPid
        $runtimesBefore = @(Get-Process -Name msb-runtime -ErrorAction Ignore | ForEach-Object Id)
        $foldersBefore = @(Get-ChildItem (Join-Path $env:MSB_HOME 'sandboxes') | ForEach-Object Name)
        $r = Invoke-Captured { New-Sandbox -Name never-ready -BootTimeout 1 -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be 'GuestNotReady'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'OperationTimeout'
        $r.Errors[0].TargetObject | Should -Be 'never-ready'
        "$($r.Errors[0])" | Should -Match 'Guest console'
        Get-Sandbox -Name never-ready -ErrorAction Ignore | Should -BeNullOrEmpty
        Get-ChildItem (Join-Path $env:MSB_HOME 'sandboxes') | Where-Object Name -NotIn $foldersBefore |
            Should -BeNullOrEmpty
        Get-QemuPid | Where-Object { $_ -notin $before } | Should -BeNullOrEmpty
        Get-Process -Name msb-runtime -ErrorAction Ignore | Where-Object Id -NotIn $runtimesBefore |
            Should -BeNullOrEmpty
    }
}

Describe 'Lookups that find nothing' -Tag Errors {
    It 'writes SandboxNotFound for a plain name, and nothing for a wildcard' {
        $r = Invoke-Captured { Get-Sandbox -Name no-such-sandbox }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be 'no-such-sandbox'

        $w = Invoke-Captured { Get-Sandbox -Name 'no-such-*' }
        $w.Errors | Should -BeNullOrEmpty
        $w.Output | Should -BeNullOrEmpty
    }

    It 'reports each missing name on its own and goes on' {
        $r = Invoke-Captured { Stop-Sandbox -Name gone1, gone2 }
        @($r.Errors | ForEach-Object { Get-ErrorId $_ }) | Should -Be @('SandboxNotFound', 'SandboxNotFound')
        @($r.Errors.TargetObject) | Should -Be @('gone1', 'gone2')
    }

    It 'rejects a malformed label selector' {
        $r = Invoke-Captured { Get-Sandbox -Label '=engine' }
        $r.Errors.Count | Should -Be 1
        Get-ErrorId $r.Errors[0] | Should -Be 'InvalidLabelSelector'
        $r.Errors[0].TargetObject | Should -Be '=engine'
    }

    It 'refuses to run a command in a sandbox that does not exist' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name no-such-sandbox -Command 'true' }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotFound'
    }
}

Describe 'Test-SandboxHost' -Tag VM {
    It 'reports every check, none failing on a prepared host' {
        $checks = Test-SandboxHost
        $checks.Check | Should -Be @('Home', 'QEMU', 'GuestAssets', 'Runtime', 'Accelerator')
        $checks | Where-Object Status -EQ 'Fail' | Should -BeNullOrEmpty
        ($checks | Where-Object Check -EQ 'QEMU').Detail | Should -Match 'QEMU \d+\.\d+'
        Test-SandboxHost -Quiet | Should -BeTrue
    }
}
